//! Reading a corpus: JSON Lines (plain or gzipped), one document per line.
//!
//! Each line is an object with an id, a title and a body (field names
//! configurable). A line that is not such an object is an error naming the
//! file and line; with `skip_invalid` it is counted and skipped instead.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use flate2::read::MultiGzDecoder;
use serde_json::{Map, Value};

/// Which JSON keys hold the document's parts.
#[derive(Debug, Clone)]
pub struct FieldNames {
    /// Key of the unique document id (a string, or a number taken as text).
    pub id: String,
    /// Key of the title (optional in each document).
    pub title: String,
    /// Key of the body text (required).
    pub body: String,
}

impl Default for FieldNames {
    fn default() -> Self {
        FieldNames {
            id: "id".into(),
            title: "title".into(),
            body: "body".into(),
        }
    }
}

/// One document of the corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Unique id.
    pub id: String,
    /// Title, possibly empty.
    pub title: String,
    /// Body text.
    pub body: String,
}

impl From<Document> for searchtree_leaf::shard::ShardDocument {
    fn from(d: Document) -> Self {
        searchtree_leaf::shard::ShardDocument {
            id: d.id,
            title: d.title,
            body: d.body,
        }
    }
}

/// The longest document id a build accepts, in bytes of UTF-8.
///
/// Ids are stored whole in every shard and returned with every hit, and
/// tantivy silently truncates a term longer than 65,530 bytes, which would
/// break uniqueness and lookups; 1 KiB is far beyond any real key or
/// relative file path while keeping every hit small. Longer ids are invalid
/// documents (refused, or skipped with `--skip-invalid`).
pub const MAX_ID_BYTES: usize = searchtree_proto::MAX_DOC_ID_BYTES;

/// Why an id of `len` bytes is refused, if it is.
pub fn check_id_len(len: usize) -> Result<(), String> {
    if len > MAX_ID_BYTES {
        return Err(format!(
            "the id is {len} bytes long; ids may be at most {MAX_ID_BYTES} bytes"
        ));
    }
    Ok(())
}

/// A line (or, in a directory corpus, a file) that is not a valid document.
/// Shown as `FILE:LINE: reason`, or `FILE: reason` for a whole file, so the
/// operator can go straight to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// The corpus file.
    pub file: String,
    /// 1-based line number; `None` when the whole file is the document.
    pub line: Option<u64>,
    /// What is wrong with it.
    pub reason: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

impl std::error::Error for LineError {}

/// Parses one line into a document, or says what is wrong with it.
pub fn parse_line(line: &str, names: &FieldNames) -> Result<Document, String> {
    document_of(&parse_object(line)?, names)
}

/// Parses one line as a JSON object, or says why it is not one. A byte
/// order mark before it (editors on Windows write one at the start of a
/// file) is not part of the line.
pub fn parse_object(line: &str) -> Result<Map<String, Value>, String> {
    let line = line.strip_prefix('\u{feff}').unwrap_or(line);
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("not a JSON object".into());
    };
    Ok(obj)
}

/// The document id of a line's object: a non-empty string or a number,
/// at most [`MAX_ID_BYTES`] long.
pub fn id_of(obj: &Map<String, Value>, names: &FieldNames) -> Result<String, String> {
    let id = match obj.get(&names.id) {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        // A whole number within 64 bits is exact; any other number came
        // through a float and two ids could read alike (2^64 and 2^64 + 1,
        // 1.5 and 1.50).
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        Some(Value::Number(n)) => {
            return Err(format!(
                "{:?} {n} is not a whole number within 64 bits, so it cannot be kept exact: \
                 write the id as a string",
                names.id
            ));
        }
        Some(Value::String(_)) => return Err(format!("{:?} is empty", names.id)),
        Some(_) => return Err(format!("{:?} must be a string or a number", names.id)),
        None => return Err(format!("missing {:?}", names.id)),
    };
    check_id_len(id.len()).map_err(|why| format!("{:?}: {why}", names.id))?;
    Ok(id)
}

/// The document a line's object holds, or what is wrong with it.
pub fn document_of(obj: &Map<String, Value>, names: &FieldNames) -> Result<Document, String> {
    let id = id_of(obj, names)?;
    let text = |key: &str, required: bool| match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Null) | None if !required => Ok(String::new()),
        None => Err(format!("missing {key:?}")),
        Some(_) => Err(format!("{key:?} must be a string")),
    };
    Ok(Document {
        id,
        title: text(&names.title, false)?,
        body: text(&names.body, true)?,
    })
}

/// A corpus file opened for reading, line by line.
pub struct CorpusReader {
    path: PathBuf,
    lines: Box<dyn BufRead>,
    line_no: u64,
    names: FieldNames,
    buf: String,
    total_bytes: u64,
    /// What has been read of the raw file (compressed bytes for `.gz`),
    /// shared with the reader at the bottom of the decoding stack.
    raw: Rc<RefCell<RawProgress>>,
}

/// Bytes read from the raw file, and their CRC-32.
#[derive(Default)]
struct RawProgress {
    bytes: u64,
    crc: crc32fast::Hasher,
}

/// What the reader yields for each non-blank line.
pub type Parsed = Result<Document, LineError>;

/// A stream of documents from somewhere, with what a build reports about it.
pub trait Source: Iterator<Item = io::Result<Parsed>> {
    /// Raw bytes read so far, for progress.
    fn bytes_read(&self) -> u64;
    /// Raw bytes in all, for progress.
    fn total_bytes(&self) -> u64;
    /// A checksum of the raw input read so far (of all of it, at the end).
    fn checksum(&self) -> String;
    /// Where the source is: the line number, or the number of files read.
    fn location(&self) -> u64;
    /// Inputs passed over that are not errors (e.g. binary files in a
    /// directory of text), with a few examples.
    fn passed_over(&self) -> (u64, Vec<String>) {
        (0, Vec::new())
    }
}

impl Source for CorpusReader {
    fn bytes_read(&self) -> u64 {
        self.raw.borrow().bytes
    }
    fn total_bytes(&self) -> u64 {
        self.total_bytes
    }
    fn checksum(&self) -> String {
        CorpusReader::checksum(self)
    }
    fn location(&self) -> u64 {
        self.line_no
    }
}

impl CorpusReader {
    /// Opens `path`; `.gz` files are decompressed on the fly.
    pub fn open(path: &Path, names: FieldNames) -> io::Result<Self> {
        let file = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let total_bytes = file.metadata()?.len();
        let progress = Rc::new(RefCell::new(RawProgress::default()));
        let raw = CountingReader {
            inner: BufReader::with_capacity(1 << 16, file),
            progress: Rc::clone(&progress),
        };
        let lines: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(BufReader::with_capacity(1 << 16, MultiGzDecoder::new(raw)))
        } else {
            Box::new(BufReader::with_capacity(1 << 16, raw))
        };
        Ok(CorpusReader {
            path: path.to_path_buf(),
            lines,
            line_no: 0,
            names,
            buf: String::new(),
            total_bytes,
            raw: progress,
        })
    }

    /// The CRC-32 of the raw file bytes read so far, as 8 hex digits. After
    /// the last line this is the checksum of the whole input file.
    pub fn checksum(&self) -> String {
        format!("crc32:{:08x}", self.raw.borrow().crc.clone().finalize())
    }

    fn line_error(&self, reason: String) -> LineError {
        LineError {
            file: self.path.display().to_string(),
            line: Some(self.line_no),
            reason,
        }
    }
}

/// Counts and checksums the raw bytes as they are read.
struct CountingReader<R> {
    inner: R,
    progress: Rc<RefCell<RawProgress>>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut progress = self.progress.borrow_mut();
        progress.bytes += n as u64;
        progress.crc.update(&buf[..n]);
        Ok(n)
    }
}

impl CorpusReader {
    /// The next non-blank line, parsed by `parse`; what it refuses comes
    /// back as a [`LineError`] naming the file and line. `None` at the end.
    /// [`Iterator::next`] is this with [`parse_line`]; `searchtree load`
    /// parses operations instead of documents.
    pub fn next_with<T>(
        &mut self,
        parse: impl FnOnce(&str, &FieldNames) -> Result<T, String>,
    ) -> Option<io::Result<Result<T, LineError>>> {
        loop {
            self.buf.clear();
            match self.lines.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    self.line_no += 1;
                    return Some(Ok(Err(self.line_error("not valid UTF-8".into()))));
                }
                Err(e) => {
                    return Some(Err(io::Error::new(
                        e.kind(),
                        format!("{}:{}: {e}", self.path.display(), self.line_no + 1),
                    )));
                }
            }
            self.line_no += 1;
            let line = self.buf.trim();
            if line.is_empty() {
                continue;
            }
            let parsed = parse(line, &self.names).map_err(|r| self.line_error(r));
            return Some(Ok(parsed));
        }
    }
}

impl Iterator for CorpusReader {
    type Item = io::Result<Parsed>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_with(parse_line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn names() -> FieldNames {
        FieldNames::default()
    }

    #[test]
    fn parses_documents_and_names_what_is_wrong() {
        let doc = parse_line(r#"{"id":"a","title":"T","body":"b"}"#, &names()).unwrap();
        assert_eq!(doc.id, "a");
        let marked = parse_line("\u{feff}{\"id\":\"a\",\"body\":\"b\"}", &names()).unwrap();
        assert_eq!(marked.id, "a", "a byte order mark is not part of the line");
        assert_eq!(
            parse_line(r#"{"id":7,"body":"b"}"#, &names()).unwrap().id,
            "7"
        );
        assert!(
            parse_line(r#"{"id":-18446744073709551615,"body":"b"}"#, &names()).is_err(),
            "below i64 too"
        );
        assert_eq!(
            parse_line(r#"{"id":18446744073709551615,"body":"b"}"#, &names())
                .unwrap()
                .id,
            "18446744073709551615"
        );
        for (line, why) in [
            ("{", "not valid JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"body":"b"}"#, "missing \"id\""),
            (r#"{"id":"","body":"b"}"#, "is empty"),
            (r#"{"id":"a"}"#, "missing \"body\""),
            (r#"{"id":"a","body":3}"#, "must be a string"),
            (r#"{"id":[],"body":"b"}"#, "string or a number"),
            (
                r#"{"id":18446744073709551616,"body":"b"}"#,
                "not a whole number within 64 bits",
            ),
            (r#"{"id":1.5,"body":"b"}"#, "write the id as a string"),
        ] {
            let err = parse_line(line, &names()).unwrap_err();
            assert!(err.contains(why), "{line}: {err}");
        }
    }

    #[test]
    fn ids_longer_than_the_limit_are_refused() {
        let line = |id: &str| format!(r#"{{"id":"{id}","body":"b"}}"#);
        let longest = "é".repeat(MAX_ID_BYTES / 2);
        assert_eq!(parse_line(&line(&longest), &names()).unwrap().id, longest);
        let err = parse_line(&line(&format!("{longest}x")), &names()).unwrap_err();
        assert_eq!(
            err,
            format!("\"id\": the id is 1025 bytes long; ids may be at most {MAX_ID_BYTES} bytes")
        );
        let err = parse_line(&line(&"a".repeat(70_000)), &names()).unwrap_err();
        assert!(err.contains("70000 bytes"), "{err}");
    }

    #[test]
    fn a_line_error_names_file_and_line_or_just_the_file() {
        let mut err = LineError {
            file: "c.jsonl".into(),
            line: Some(7),
            reason: "why".into(),
        };
        assert_eq!(err.to_string(), "c.jsonl:7: why");
        err.line = None;
        assert_eq!(err.to_string(), "c.jsonl: why");
    }

    #[test]
    fn custom_field_names() {
        let names = FieldNames {
            id: "key".into(),
            title: "name".into(),
            body: "text".into(),
        };
        let doc = parse_line(r#"{"key":"k","name":"N","text":"t"}"#, &names).unwrap();
        assert_eq!((doc.id.as_str(), doc.title.as_str()), ("k", "N"));
    }

    #[test]
    fn errors_carry_file_and_line_and_gz_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::default(),
        );
        writeln!(gz, r#"{{"id":"a","body":"x"}}"#).unwrap();
        writeln!(gz).unwrap();
        writeln!(gz, r#"{{"id":"b"}}"#).unwrap();
        gz.finish().unwrap();

        let items: Vec<Parsed> = CorpusReader::open(&path, names())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap().id, "a");
        let err = items[1].as_ref().unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(
            err.to_string().ends_with("c.jsonl.gz:3: missing \"body\""),
            "{err}"
        );
    }
}
