//! Which shard a document lives in: a stable function of its id alone.
//!
//! `shard = jump_consistent_hash(fnv1a_64(id as UTF-8 bytes), num_shards)`
//!
//! - FNV-1a (64-bit) is tiny, fixed forever, and identical on every platform,
//!   so the same corpus always shards the same way.
//! - Jump consistent hash (Lamping & Veach, 2014) spreads ids evenly and, when
//!   the shard count grows from N to N+1, moves only ~1/(N+1) of the documents.

/// FNV-1a, 64-bit, over `bytes`.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// Jump consistent hash of `key` into `0..buckets` (`buckets` ≥ 1).
pub fn jump_consistent_hash(mut key: u64, buckets: u32) -> u32 {
    assert!(buckets > 0, "need at least one bucket");
    let (mut b, mut j) = (-1i64, 0i64);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

/// The shard of the document with id `id` among `num_shards` shards.
pub fn shard_of(id: &str, num_shards: u32) -> u32 {
    jump_consistent_hash(fnv1a_64(id.as_bytes()), num_shards)
}

/// The gRPC metadata key carrying the corpus's shard count on `Corpus.Load`
/// streams: operations carry no shard, so every hop (the root sets it)
/// places them with the same count.
pub const NUM_SHARDS_METADATA: &str = "x-searchtree-num-shards";

/// Why a document id cannot be placed (loaded), if it cannot: it must be
/// non-empty and at most [`crate::MAX_DOC_ID_BYTES`] long. The root, the
/// parents and the leaves refuse such an operation with this reason.
pub fn id_refusal(id: &str) -> Option<String> {
    if id.is_empty() {
        Some("empty id".into())
    } else if id.len() > crate::MAX_DOC_ID_BYTES {
        Some(format!(
            "id of {} bytes (at most {})",
            id.len(),
            crate::MAX_DOC_ID_BYTES
        ))
    } else {
        None
    }
}

/// How the manifest names this function, so a reader knows how ids were placed.
pub const SHARDING_FUNCTION: &str = "jump_consistent_hash(fnv1a_64(id), num_shards)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn jump_hash_matches_published_vectors() {
        assert_eq!(jump_consistent_hash(1, 1), 0);
        assert_eq!(jump_consistent_hash(100, 20), 4);
        assert_eq!(jump_consistent_hash(10_863_919_174_838_991, 11), 6);
        assert_eq!(jump_consistent_hash(2_016_238_256_797_177_309, 11), 3);
    }

    #[test]
    fn placement_is_pinned() {
        // These values are part of the on-disk format: changing them would
        // silently re-shard every corpus.
        let got: Vec<u32> = ["paris", "rust", "amazon_river", "cell_biology-2", ""]
            .iter()
            .map(|id| shard_of(id, 4))
            .collect();
        assert_eq!(got, PINNED);
    }
    const PINNED: [u32; 5] = [0, 1, 2, 0, 1];

    #[test]
    fn one_shard_takes_everything_and_results_stay_in_range() {
        for i in 0..1000 {
            let id = format!("doc-{i}");
            assert_eq!(shard_of(&id, 1), 0);
            assert!(shard_of(&id, 7) < 7);
        }
    }

    #[test]
    fn spreads_evenly_and_moves_little_when_growing() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("doc-{i}")).collect();
        let mut counts = [0usize; 4];
        for id in &ids {
            counts[shard_of(id, 4) as usize] += 1;
        }
        for c in counts {
            assert!((4_500..5_500).contains(&c), "uneven: {counts:?}");
        }
        let moved = ids
            .iter()
            .filter(|id| shard_of(id, 4) != shard_of(id, 5))
            .count();
        // Ideal is 1/5 of the ids; a modulo hash would move ~4/5.
        assert!(moved < ids.len() * 23 / 100, "moved {moved}");
    }
}
