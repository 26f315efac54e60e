//! A prefix phrase (`"new yo"*`) matches the words its last word begins
//! with, and tantivy expands at most [`MAX_PREFIX_TERMS`] of them, the first
//! in the term dictionary's order. Each shard has its own dictionary, so
//! past that limit each shard would pick a different 50 words and the tree
//! would answer neither what one index answers nor the same twice after a
//! resharding. A leaf therefore refuses a prefix that begins more words
//! than that in its shard, saying which and what to do; below the limit,
//! every shard expands every word it has, which is what one index does.
//!
//! What stays: a prefix that begins more than 50 words in the whole corpus
//! but at most 50 in every shard is expanded in full by the tree, where one
//! index over the corpus would stop at its first 50.

use tantivy::query_grammar::{UserInputAst, UserInputLeaf, UserInputLiteral};
use tantivy::schema::{Field, FieldType};
use tantivy::tokenizer::TokenStream;
use tantivy::{Index, IndexReader, Searcher, Term};

/// The words a prefix may expand to: tantivy's own default for phrase
/// prefixes (`PhrasePrefixQuery::set_max_expansions`).
pub const MAX_PREFIX_TERMS: usize = 50;

/// Refuses `query` if one of its prefix phrases begins more than
/// [`MAX_PREFIX_TERMS`] words of a field in one of the segments `reader`
/// serves, with a reason a person can act on. `default_fields` are those a
/// phrase with no field searches. A query that does not parse passes: the
/// parser says what is wrong with it. A query without `*` is not looked at
/// (nor is a searcher taken): the check costs nothing on most searches.
pub fn check(
    query: &str,
    index: &Index,
    reader: &IndexReader,
    default_fields: &[Field],
) -> Result<(), String> {
    if !query.contains('*') {
        return Ok(());
    }
    let searcher = reader.searcher();
    let Ok(ast) = tantivy::query_grammar::parse_query(query) else {
        return Ok(());
    };
    let mut literals = Vec::new();
    prefix_literals(&ast, &mut literals);
    for literal in literals {
        let fields = match &literal.field_name {
            Some(name) => match index.schema().get_field(name) {
                Ok(field) => vec![field],
                Err(_) => continue,
            },
            None => default_fields.to_vec(),
        };
        for field in fields {
            let Some(prefix) = last_word(index, field, &literal.phrase) else {
                continue;
            };
            if begins_too_many(&searcher, field, &prefix) {
                return Err(format!(
                    "the prefix {:?} of \"{}\"* begins more than {MAX_PREFIX_TERMS} words in \
                     this shard, and each shard would expand a different {MAX_PREFIX_TERMS} of \
                     them; make the last word longer",
                    String::from_utf8_lossy(&prefix),
                    searchtree_proto::query::truncate_chars(&literal.phrase, 48),
                ));
            }
        }
    }
    Ok(())
}

/// The prefix phrases of `ast`, wherever they are in it.
fn prefix_literals<'a>(ast: &'a UserInputAst, out: &mut Vec<&'a UserInputLiteral>) {
    match ast {
        UserInputAst::Clause(clauses) => {
            for (_, clause) in clauses {
                prefix_literals(clause, out);
            }
        }
        UserInputAst::Boost(inner, _) => prefix_literals(inner, out),
        UserInputAst::Leaf(leaf) => {
            if let UserInputLeaf::Literal(literal) = leaf.as_ref()
                && literal.prefix
            {
                out.push(literal);
            }
        }
    }
}

/// The bytes of the last word of `phrase` as `field` indexes it (its
/// tokenizer's last token), or None if the field is not text or the phrase
/// has no word.
fn last_word(index: &Index, field: Field, phrase: &str) -> Option<Vec<u8>> {
    if !matches!(
        index.schema().get_field_entry(field).field_type(),
        FieldType::Str(_)
    ) {
        return None;
    }
    let mut tokenizer = index.tokenizer_for_field(field).ok()?;
    let mut stream = tokenizer.token_stream(phrase);
    let mut last = None;
    while stream.advance() {
        last = Some(stream.token().text.clone());
    }
    let term = Term::from_field_text(field, &last?);
    Some(term.serialized_value_bytes().to_vec())
}

/// Whether more than [`MAX_PREFIX_TERMS`] words of `field` begin with
/// `prefix` in one of `searcher`'s segments.
fn begins_too_many(searcher: &Searcher, field: Field, prefix: &[u8]) -> bool {
    searcher.segment_readers().iter().any(|segment| {
        let Ok(inverted) = segment.inverted_index(field) else {
            return false;
        };
        let mut range = inverted.terms().range().ge(prefix);
        if let Some(end) = prefix_end(prefix) {
            range = range.lt(end);
        }
        let Ok(mut stream) = range.into_stream() else {
            return false;
        };
        let mut words = 0;
        while stream.advance() {
            words += 1;
            if words > MAX_PREFIX_TERMS {
                return true;
            }
        }
        false
    })
}

/// The least byte string above every one beginning with `prefix`, if any.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use tantivy::doc;
    use tantivy::schema::{Schema, TEXT};

    use super::*;

    fn index(words: &[String]) -> (Index, Field, Field) {
        let mut schema = Schema::builder();
        let title = schema.add_text_field("title", TEXT);
        let body = schema.add_text_field("body", TEXT);
        let index = Index::create_in_ram(schema.build());
        let mut writer = index.writer_with_num_threads(1, 20 << 20).unwrap();
        for w in words {
            writer
                .add_document(doc!(title => "a title", body => format!("new {w}")))
                .unwrap();
        }
        writer.commit().unwrap();
        (index, title, body)
    }

    #[test]
    fn a_prefix_of_more_words_than_the_limit_is_refused_with_its_words() {
        let words: Vec<String> = (0..60).map(|i| format!("york{i:02}")).collect();
        let (index, title, body) = index(&words);
        let reader = index.reader().unwrap();
        let fields = [title, body];
        let err = check("\"new yo\"*", &index, &reader, &fields).unwrap_err();
        assert!(
            err.contains("\"yo\"") && err.contains("more than 50") && err.contains("longer"),
            "{err}"
        );
        // Nested, boosted or fielded: the same.
        assert!(check("volcano OR (\"new yo\"*)^2", &index, &reader, &fields).is_err());
        assert!(check("body:\"new yo\"*", &index, &reader, &fields).is_err());
        // A longer prefix begins fewer words; the title has none of them;
        // a query without a prefix is not looked at.
        assert!(check("\"new york0\"*", &index, &reader, &fields).is_ok());
        assert!(check("title:\"new yo\"*", &index, &reader, &fields).is_ok());
        assert!(check("new york", &index, &reader, &fields).is_ok());
    }

    #[test]
    fn the_end_of_a_prefix_range_carries_past_the_last_byte() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }
}
