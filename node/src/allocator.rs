//! Every searchtree binary's global allocator (the nodes' and the CLI's):
//! mimalloc, called through its plain entry points whenever they give the
//! alignment asked for. A leaf spent a fifth of its time at the tree's peak
//! in glibc's malloc and free (the request, its query, its hits, their
//! snippets and the answer, allocated and freed for every query); see
//! BENCHMARKS.md, "The allocator".
//!
//! The `mimalloc` crate's allocator sends every request through
//! `mi_malloc_aligned`, and mimalloc v3 takes its fast path there only
//! when the block size is a power of two: a 48-byte request went through
//! the over-allocating generic path. A simulation allocates a few small
//! blocks per simulated leaf request, and that path was a tenth of its
//! instructions. Every mimalloc block is at least 8-byte aligned (blocks
//! are whole words), so requests aligned to 8 or less take `mi_malloc`,
//! as the system allocator's wrapper in `std` does for `malloc`.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every block `mi_malloc` returns has, whatever its size.
const PLAIN_ALIGN: usize = 8;

/// mimalloc as the global allocator (see the module documentation).
pub struct MiMalloc;

// SAFETY: each method hands the request to the mimalloc function made for
// it, plain only when the alignment asked for is one every block has;
// mimalloc returns null on failure, as `GlobalAlloc` requires.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for the impl.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for the impl.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (mimalloc frees blocks of
        // either kind with `mi_free`).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for the impl; the alignment is the old block's.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

/// How long a server keeps memory it freed before giving it back to the
/// OS, in milliseconds. mimalloc's own default (10 ms) is the gap between
/// two queries at 100/s: every query faulted its pages in again, zeroed by
/// the kernel, which made the tree slower at low load with mimalloc than
/// with glibc's malloc. A second keeps them across a steady stream of
/// requests, and still gives an idle node's memory back.
pub const SERVER_PURGE_DELAY_MS: i64 = 1_000;

/// Sets up a server's allocator: freed memory kept for
/// [`SERVER_PURGE_DELAY_MS`], and no transparent huge pages unless the
/// operator asks for them with mimalloc's own `MIMALLOC_ALLOW_THP=1`.
///
/// mimalloc asks the kernel for huge pages on its arenas (`MADV_HUGEPAGE`),
/// so the first touch of any byte of a 2 MiB range has the kernel zero all
/// of it. A leaf's loads allocate a new indexing arena for every batch
/// (a tantivy segment writer, on threads started for it), and the inner
/// nodes a buffer for every batch they pass on: with huge pages, zeroing
/// them was a third of a leaf's CPU during a load (`clear_page_erms`), and
/// streaming 50,165 documents into a 4-leaf tree took 1.6–1.7 s against
/// 1.1 s without (BENCHMARKS.md, "Huge pages").
pub fn configure_for_server() {
    set_purge_delay(SERVER_PURGE_DELAY_MS);
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        disable_transparent_huge_pages();
    }
}

/// Keeps the process's anonymous memory in small pages (the flag is the
/// process's, so it covers the arenas mimalloc reserved before `main`).
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory
    // of ours; on a kernel without it the call fails and changes nothing.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Sets how long the allocator keeps freed memory before returning it to
/// the OS: `delay_ms` milliseconds, or never if negative.
pub fn set_purge_delay(delay_ms: i64) {
    use std::ffi::{c_int, c_long};
    // `mi_option_purge_delay` in mimalloc.h (v2 and v3 alike).
    const MI_OPTION_PURGE_DELAY: c_int = 15;
    unsafe extern "C" {
        fn mi_option_set(option: c_int, value: c_long);
    }
    // SAFETY: sets one of the allocator's options; it reads no memory of
    // ours and options may be changed at any time.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, delay_ms as c_long) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_server_takes_no_huge_pages_unless_asked() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            return;
        }
        configure_for_server();
        // SAFETY: PR_GET_THP_DISABLE reads the process's flag only.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1);
    }

    #[test]
    fn every_block_has_the_alignment_asked_for() {
        let mut blocks = Vec::new();
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in (1..=2100).step_by(7).chain([align, 3 * align, 65_536]) {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: sizes are non-zero; each block is freed below
                // with its layout.
                let (p, z) = unsafe { (MiMalloc.alloc(layout), MiMalloc.alloc_zeroed(layout)) };
                assert!(!p.is_null() && !z.is_null());
                assert_eq!(p as usize % align, 0, "size {size}, align {align}");
                assert_eq!(z as usize % align, 0, "zeroed, size {size}, align {align}");
                // SAFETY: `z` holds `size` bytes.
                assert!(
                    unsafe { std::slice::from_raw_parts(z, size) }
                        .iter()
                        .all(|&b| b == 0)
                );
                // SAFETY: `p` came from `alloc(layout)`.
                let r = unsafe { MiMalloc.realloc(p, layout, size * 2 + 5) };
                assert_eq!(r as usize % align, 0, "grown, size {size}, align {align}");
                blocks.push((r, Layout::from_size_align(size * 2 + 5, align).unwrap()));
                blocks.push((z, layout));
            }
        }
        for (p, layout) in blocks {
            // SAFETY: each came from this allocator with this layout.
            unsafe { MiMalloc.dealloc(p, layout) };
        }
    }
}
