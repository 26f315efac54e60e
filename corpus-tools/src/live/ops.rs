//! One line of `searchtree load`'s input: a document to add or replace
//! (the same object `searchtree build` reads), or `{"id": .., "op":
//! "delete"}` to delete the document with that id.

use searchtree_proto::pb::DocOp;
use serde_json::Value;

use crate::build::corpus::{FieldNames, document_of, id_of, parse_object};

/// The key naming what to do with the document; absent means `upsert`.
pub const OP_KEY: &str = "op";
/// The operation that adds a document or replaces the one with its id.
pub const UPSERT: &str = "upsert";
/// The operation that deletes the document with the line's id.
pub const DELETE: &str = "delete";

/// The largest document (id, title and body) a load sends: one batch's
/// worth of text, well inside the tree's 64 MiB message limit. A larger one
/// would be refused by the transport with an error naming neither the line
/// nor the cause, on every rerun.
pub const MAX_LOADED_DOCUMENT_BYTES: usize = crate::live::batches::MAX_BATCH_BYTES;

/// Parses one line into an operation (its `line` left 0), or says what is
/// wrong with it, in the words of the build's reader.
pub fn parse_op(line: &str, names: &FieldNames) -> Result<DocOp, String> {
    let obj = parse_object(line)?;
    match obj.get(OP_KEY) {
        None | Some(Value::Null) => {}
        Some(Value::String(op)) if op == UPSERT => {}
        Some(Value::String(op)) if op == DELETE => {
            return Ok(DocOp {
                id: id_of(&obj, names)?,
                delete: true,
                ..DocOp::default()
            });
        }
        Some(other) => {
            return Err(format!(
                "{OP_KEY:?} must be {UPSERT:?} or {DELETE:?}, not {other}"
            ));
        }
    }
    let document = document_of(&obj, names)?;
    let bytes = document.id.len() + document.title.len() + document.body.len();
    if bytes > MAX_LOADED_DOCUMENT_BYTES {
        return Err(format!(
            "the document is {bytes} bytes; a loaded document may be at most {} MiB (it \
             travels in one message through the tree): split it, or build the corpus offline \
             (`searchtree build`, then `searchtree publish --from-build`)",
            MAX_LOADED_DOCUMENT_BYTES >> 20
        ));
    }
    Ok(DocOp {
        id: document.id,
        title: document.title,
        body: document.body,
        ..DocOp::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<DocOp, String> {
        parse_op(line, &FieldNames::default())
    }

    #[test]
    fn a_document_past_the_limit_is_a_bad_line_saying_so() {
        let body = "x".repeat(MAX_LOADED_DOCUMENT_BYTES);
        let err = parse(&format!(r#"{{"id":"a","body":"{body}"}}"#)).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "the document is {} bytes; a loaded document may be at most 16 MiB",
                MAX_LOADED_DOCUMENT_BYTES + 1
            )),
            "{err}"
        );
        let fits = "x".repeat(MAX_LOADED_DOCUMENT_BYTES - 1);
        assert!(parse(&format!(r#"{{"id":"a","body":"{fits}"}}"#)).is_ok());
    }

    #[test]
    fn a_delete_needs_only_an_id_and_a_document_everything_a_build_needs() {
        let delete = parse(r#"{"id":"a","op":"delete"}"#).unwrap();
        assert_eq!((delete.id.as_str(), delete.delete), ("a", true));
        let numbered = parse(r#"{"id":7,"op":"delete","body":"ignored"}"#).unwrap();
        assert_eq!((numbered.id.as_str(), numbered.body.as_str()), ("7", ""));
        for line in [
            r#"{"id":"a","title":"T","body":"b"}"#,
            r#"{"id":"a","title":"T","body":"b","op":"upsert"}"#,
            r#"{"id":"a","title":"T","body":"b","op":null}"#,
        ] {
            let op = parse(line).unwrap();
            assert!(!op.delete, "{line}");
            assert_eq!(
                (op.id.as_str(), op.title.as_str(), op.body.as_str()),
                ("a", "T", "b")
            );
        }
    }

    #[test]
    fn what_is_wrong_with_a_line_is_said() {
        for (line, why) in [
            (r#"{"op":"delete"}"#, "missing \"id\""),
            (r#"{"id":"","op":"delete"}"#, "\"id\" is empty"),
            (
                r#"{"id":"a","op":"remove"}"#,
                "\"op\" must be \"upsert\" or \"delete\", not \"remove\"",
            ),
            (r#"{"id":"a","op":1}"#, "not 1"),
            (r#"{"id":"a","op":"upsert"}"#, "missing \"body\""),
            ("[]", "not a JSON object"),
        ] {
            let err = parse(line).unwrap_err();
            assert!(err.contains(why), "{line}: {err}");
        }
        let long = format!(r#"{{"id":"{}","op":"delete"}}"#, "x".repeat(1025));
        assert!(parse(&long).unwrap_err().contains("at most 1024 bytes"));
    }

    #[test]
    fn custom_field_names_apply_to_deletes_too() {
        let names = FieldNames {
            id: "key".into(),
            title: "name".into(),
            body: "text".into(),
        };
        let op = parse_op(r#"{"key":"k","op":"delete"}"#, &names).unwrap();
        assert_eq!(op.id, "k");
        let op = parse_op(r#"{"key":"k","name":"N","text":"t"}"#, &names).unwrap();
        assert_eq!((op.title.as_str(), op.body.as_str()), ("N", "t"));
    }
}
