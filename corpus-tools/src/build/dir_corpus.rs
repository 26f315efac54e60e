//! A directory of text files read as a corpus: one document per file, its
//! path (relative to the directory) as id and title, its text as body. For
//! building larger corpora from real text such as documentation or source
//! trees (`searchtree build --input-dir`).
//!
//! Files that are not UTF-8 text (binary files, which a source tree has) or
//! larger than [`MAX_FILE_BYTES`] are passed over and counted, not errors.
//! `.gz` files are decompressed (Debian ships documentation gzipped); their
//! id drops the `.gz`. Files are read in path order, so a build is repeatable.
//! A text file whose id (its relative path) is longer than
//! [`MAX_ID_BYTES`](crate::build::corpus::MAX_ID_BYTES) is an invalid document,
//! reported as `PATH: reason` like a bad line of a JSON Lines corpus.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::build::corpus::{Document, LineError, Parsed, Source, check_id_len};

/// Files larger than this are passed over.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// Reads a directory tree as documents.
pub struct DirReader {
    root: PathBuf,
    files: std::vec::IntoIter<(PathBuf, u64)>,
    total_bytes: u64,
    bytes_read: u64,
    files_read: u64,
    crc: crc32fast::Hasher,
    passed_over: u64,
    examples: Vec<String>,
}

impl DirReader {
    /// Lists every regular file below `root` (symbolic links are not followed).
    pub fn open(root: &Path) -> io::Result<Self> {
        let mut files = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
            for entry in entries {
                let entry = entry?;
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    stack.push(entry.path());
                } else if kind.is_file() {
                    files.push((entry.path(), entry.metadata()?.len()));
                }
            }
        }
        files.sort();
        let total_bytes = files.iter().map(|(_, n)| n).sum();
        Ok(DirReader {
            root: root.to_path_buf(),
            files: files.into_iter(),
            total_bytes,
            bytes_read: 0,
            files_read: 0,
            crc: crc32fast::Hasher::new(),
            passed_over: 0,
            examples: Vec::new(),
        })
    }

    fn pass_over(&mut self, path: &Path, why: &str) {
        self.passed_over += 1;
        if self.examples.len() < 10 {
            self.examples.push(format!("{}: {why}", path.display()));
        }
    }
}

impl Iterator for DirReader {
    type Item = io::Result<Parsed>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (path, size) = self.files.next()?;
            self.files_read += 1;
            self.bytes_read += size;
            if size > MAX_FILE_BYTES {
                self.pass_over(&path, "larger than 4 MiB");
                continue;
            }
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    return Some(Err(io::Error::new(
                        e.kind(),
                        format!("{}: {e}", path.display()),
                    )));
                }
            };
            let relative = path.strip_prefix(&self.root).unwrap_or(&path);
            let mut id = relative.to_string_lossy().into_owned();
            self.crc.update(id.as_bytes());
            self.crc.update(&bytes);
            let bytes = if path.extension().is_some_and(|e| e == "gz") {
                let mut text = Vec::new();
                let read = flate2::read::MultiGzDecoder::new(&bytes[..])
                    .take(MAX_FILE_BYTES + 1)
                    .read_to_end(&mut text);
                if read.is_err() || text.len() as u64 > MAX_FILE_BYTES {
                    self.pass_over(&path, "not a readable gzip file of at most 4 MiB");
                    continue;
                }
                id.truncate(id.len() - ".gz".len());
                text
            } else {
                bytes
            };
            let body = match String::from_utf8(bytes) {
                Ok(text) if !text.contains('\0') => text,
                _ => {
                    self.pass_over(&path, "not UTF-8 text");
                    continue;
                }
            };
            if let Err(why) = check_id_len(id.len()) {
                return Some(Ok(Err(LineError {
                    file: path.display().to_string(),
                    line: None,
                    reason: format!("its path relative to the directory is its id, and {why}"),
                })));
            }
            return Some(Ok(Ok(Document {
                title: id.clone(),
                id,
                body,
            })));
        }
    }
}

impl Source for DirReader {
    fn bytes_read(&self) -> u64 {
        self.bytes_read
    }
    fn total_bytes(&self) -> u64 {
        self.total_bytes
    }
    fn checksum(&self) -> String {
        format!("crc32:{:08x}", self.crc.clone().finalize())
    }
    fn location(&self) -> u64 {
        self.files_read
    }
    fn passed_over(&self) -> (u64, Vec<String>) {
        (self.passed_over, self.examples.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_document_per_text_file_in_path_order() {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path();
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::write(root.join("b/c/z.txt"), "deep text").unwrap();
        std::fs::write(root.join("a.md"), "top text").unwrap();
        std::fs::write(root.join("blob.bin"), [0u8, 159, 146, 150]).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, b"zipped text").unwrap();
        std::fs::write(root.join("b/doc.rst.gz"), gz.finish().unwrap()).unwrap();
        let mut reader = DirReader::open(root).unwrap();
        let docs: Vec<Document> = reader.by_ref().map(|d| d.unwrap().unwrap()).collect();
        let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a.md", "b/c/z.txt", "b/doc.rst"]);
        assert_eq!(docs[1].title, "b/c/z.txt");
        assert_eq!(docs[1].body, "deep text");
        assert_eq!(docs[2].body, "zipped text");
        let (n, examples) = reader.passed_over();
        assert_eq!(n, 1);
        assert!(examples[0].ends_with("blob.bin: not UTF-8 text"));
        assert_eq!(reader.location(), 4);
    }

    #[test]
    fn a_path_longer_than_an_id_may_be_is_an_invalid_document() {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path();
        // Nested, as one path component may not exceed 255 bytes.
        let deep: PathBuf = std::iter::repeat_n("d".repeat(200), 6).collect();
        std::fs::create_dir_all(root.join(&deep)).unwrap();
        std::fs::write(root.join(&deep).join("long.txt"), "text").unwrap();
        std::fs::write(root.join("short.txt"), "text").unwrap();
        let items: Vec<Parsed> = DirReader::open(root).unwrap().map(Result::unwrap).collect();
        assert_eq!(items.len(), 2);
        let err = items[0].as_ref().unwrap_err();
        assert_eq!(err.line, None);
        assert!(err.file.ends_with("long.txt"), "{err}");
        assert!(err.reason.contains("1214 bytes long"), "{err}");
        assert!(err.to_string().contains("long.txt: its path"), "{err}");
        assert_eq!(items[1].as_ref().unwrap().id, "short.txt");
    }
}
