//! Query complexity limits, checked before anything parses a query for real.
//!
//! A query travels to every leaf, so one query that hurts a leaf hurts all of
//! them at once. Every node therefore checks a query on receipt, the root
//! first, so that a query no leaf could survive never leaves the root:
//!
//! 1. **Nesting, before any parser runs.** tantivy's query grammar is a
//!    recursive-descent parser: each `(` and each `NOT` is one level of
//!    recursion, so a few thousand of them overflow a thread's stack and
//!    abort the process. The check counts them in one pass over the bytes,
//!    ignoring quotes on purpose: the count is an upper bound on the depth any
//!    reading of the string could reach, which a quoting trick cannot
//!    undercount.
//! 2. **Syntax**, with tantivy's own grammar, on the bounded string.
//! 3. **Cost and meaning**, walking the parsed query without recursion: how
//!    many terms, prefix phrases (each expands to up to 50 terms) and ranges;
//!    only fields the corpus has; `field:*` only on a field that can answer
//!    it; no regular expressions; boosts that keep scores finite.
//!
//! Every refusal is an [`QueryError`] whose message is short and quotes the
//! query at most once, truncated: a status message travels in HTTP/2
//! headers, and echoing a hostile query there breaks the transport.

use std::cell::RefCell;
use std::fmt;

use tantivy_query_grammar::{Occur, UserInputAst, UserInputLeaf};

/// The fields a query may name (`title:paris`). They are the corpus schema's
/// searchable fields, part of the API contract.
pub const FIELDS: &[&str] = &["title", "body", "id"];
/// The fields `field:*` ("has a value") can be asked of: only fields the
/// index keeps a column for. Every document has an id, so `id:*` matches all.
pub const EXISTS_FIELDS: &[&str] = &["id"];

/// Why a query with nothing to search for is refused: one text for the
/// check here and for tantivy's own refusal at a leaf.
pub const NOTHING_TO_MATCH: &str = "nothing in it can match: it has only excluded terms \
    (-word, NOT word), punctuation or symbols without words, or words of 40 bytes or more (the \
    index leaves those out); add a word to search for";

/// The shortest word, in bytes, that the index's tokenizer leaves out
/// (tantivy's `RemoveLongFilter::limit(40)` keeps words shorter than it).
const LEFT_OUT_WORD_BYTES: usize = 40;

/// The longest excerpt of a query quoted in an error message, in characters.
pub const QUOTED_QUERY_CHARS: usize = 48;

/// How complex a query may be. Every field has a documented default; nodes
/// take them as flags, and the nesting limit can never be raised past
/// [`HARD_MAX_NESTING`], which is what keeps the parser's recursion safe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryLimits {
    /// The longest query, in bytes.
    pub max_bytes: usize,
    /// The most `(` and `NOT` a query may contain, each one a level of
    /// recursion in the parser.
    pub max_nesting: usize,
    /// The most terms: words of every term and phrase, elements of `IN [...]`
    /// sets, and ranges.
    pub max_terms: usize,
    /// The most prefix phrases (`"foo"*`, `"foo ba"*`), each expanding to up
    /// to 50 indexed terms.
    pub max_prefix_terms: usize,
    /// The most range clauses (`title:[a TO c]`), each a scan over the term
    /// dictionary.
    pub max_ranges: usize,
    /// The largest boost (`term^2.5`).
    pub max_boost: f64,
}

/// The default longest query, in bytes.
pub const DEFAULT_MAX_QUERY_BYTES: usize = 4096;
/// The default nesting limit: far more than any hand-written query uses.
pub const DEFAULT_MAX_NESTING: usize = 32;
/// The nesting no configuration may exceed. Measured: the parser aborts a
/// 2 MiB stack at about 2,200 levels, so 100 keeps a wide margin.
pub const HARD_MAX_NESTING: usize = 100;
/// The default term limit.
pub const DEFAULT_MAX_TERMS: usize = 128;
/// The default prefix-term limit.
pub const DEFAULT_MAX_PREFIX_TERMS: usize = 8;
/// The default range limit.
pub const DEFAULT_MAX_RANGES: usize = 4;
/// The default boost limit.
pub const DEFAULT_MAX_BOOST: f64 = 1000.0;
/// The largest slop of a sloppy phrase (`"a b"~N`). Matching a sloppy
/// phrase in one document costs more than linear in its slop and words, and
/// cannot be interrupted by the deadline (it happens inside one document's
/// match): a phrase of 28 common words with slop 255 took every leaf to
/// gigabytes of memory and an abort. Elasticsearch users rarely go past a
/// few; 16 keeps "near each other" queries.
pub const MAX_PHRASE_SLOP: u32 = 16;
/// The most words in a phrase that has a slop.
pub const MAX_SLOPPY_PHRASE_WORDS: usize = 8;

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_bytes: DEFAULT_MAX_QUERY_BYTES,
            max_nesting: DEFAULT_MAX_NESTING,
            max_terms: DEFAULT_MAX_TERMS,
            max_prefix_terms: DEFAULT_MAX_PREFIX_TERMS,
            max_ranges: DEFAULT_MAX_RANGES,
            max_boost: DEFAULT_MAX_BOOST,
        }
    }
}

impl QueryLimits {
    /// Checks that the limits themselves are usable.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_nesting > HARD_MAX_NESTING {
            return Err(format!(
                "max query nesting {} is above the hard limit {HARD_MAX_NESTING}",
                self.max_nesting
            ));
        }
        if self.max_bytes == 0 || self.max_terms == 0 {
            return Err("query byte and term limits must be at least 1".into());
        }
        if !(self.max_boost.is_finite() && self.max_boost > 0.0) {
            return Err(format!(
                "max boost {} must be a positive number",
                self.max_boost
            ));
        }
        Ok(())
    }
}

/// Why a query was refused. Every variant is the caller's to fix, and its
/// message says how.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// Empty or only white space.
    #[error("query is empty: give at least one term, e.g. \"rust\" or \"title:paris\"")]
    Empty,
    /// Longer than [`QueryLimits::max_bytes`].
    #[error("query is {bytes} bytes long; the limit is {limit} bytes")]
    TooLong {
        /// The query's length.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// More `(` and `NOT` than [`QueryLimits::max_nesting`].
    #[error(
        "query nests too deeply: it has {found} '(' and NOT; the limit is {limit}. Remove needless parentheses"
    )]
    TooDeep {
        /// `(` and `NOT` found.
        found: usize,
        /// The limit.
        limit: usize,
    },
    /// tantivy's grammar does not accept it.
    #[error("cannot parse query {query}: {hint}")]
    Syntax {
        /// The query, quoted and truncated.
        query: Quoted,
        /// Where and why, e.g. "at byte 6: expected word".
        hint: String,
    },
    /// More terms than [`QueryLimits::max_terms`].
    #[error("query has {found} terms; the limit is {limit}")]
    TooManyTerms {
        /// Terms found.
        found: usize,
        /// The limit.
        limit: usize,
    },
    /// More prefix terms than [`QueryLimits::max_prefix_terms`].
    #[error("query has {found} prefix phrases (\"term\"*); the limit is {limit}")]
    TooManyPrefixes {
        /// Prefix terms found.
        found: usize,
        /// The limit.
        limit: usize,
    },
    /// More ranges than [`QueryLimits::max_ranges`].
    #[error("query has {found} ranges; the limit is {limit}")]
    TooManyRanges {
        /// Ranges found.
        found: usize,
        /// The limit.
        limit: usize,
    },
    /// A sloppy phrase (`"a b"~N`) whose slop is above [`MAX_PHRASE_SLOP`],
    /// or with more words than [`MAX_SLOPPY_PHRASE_WORDS`].
    #[error(
        "phrase with slop {slop} and {words} words is too costly: a sloppy phrase may have a \
         slop of at most {MAX_PHRASE_SLOP} and at most {MAX_SLOPPY_PHRASE_WORDS} words \
         (drop the ~N, or search the words without quotes)"
    )]
    SloppyPhrase {
        /// The slop given.
        slop: u32,
        /// Words in the phrase.
        words: usize,
    },
    /// A field the corpus does not have.
    #[error("unknown field {field}: a query may name {}", FIELDS.join(", "))]
    UnknownField {
        /// The field, quoted and truncated.
        field: Quoted,
    },
    /// `field:*` on a field that cannot answer it.
    #[error(
        "{field}:* is not supported: only {}:* is; use * alone to match every document",
        EXISTS_FIELDS.join(":*, ")
    )]
    ExistsUnsupported {
        /// The field, quoted and truncated.
        field: Quoted,
    },
    /// Nothing outside an exclusion can match: every word left is
    /// punctuation, a symbol or too long to be indexed, or excluded.
    #[error("{NOTHING_TO_MATCH}")]
    NothingToMatch,
    /// A regular expression (`/.../`).
    #[error("regular expressions (/.../) are not supported: use terms, phrases or \"prefix\"*")]
    Regex,
    /// A boost, or the product of nested boosts, that is not a number in
    /// range.
    #[error(
        "boost {found} is out of range: give a positive number up to {limit} (nested boosts \
         multiply)"
    )]
    Boost {
        /// The boost found, as a short number (`4.9e256`, not 257 digits).
        found: String,
        /// The limit.
        limit: f64,
    },
}

/// A string quoted for an error message: at most [`QUOTED_QUERY_CHARS`]
/// characters, escaped, with `…` when cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted(String);

impl Quoted {
    /// Quotes `s`, truncated.
    pub fn new(s: &str) -> Self {
        Quoted(truncate_chars(s, QUOTED_QUERY_CHARS))
    }
}

impl fmt::Display for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// `s` cut to at most `max` characters, with `…` appended when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}…", &s[..cut]),
    }
}

/// `s` cut to at most `max_bytes` bytes (on a character boundary), with `…`
/// appended when cut: for messages assembled from many parts (e.g. one per
/// failed shard) that must stay small enough for a gRPC status.
pub fn truncate_bytes(s: &str, max_bytes: usize) -> String {
    if s.len() <= max_bytes {
        return s.to_string();
    }
    let mut cut = max_bytes.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

/// What a query costs, as counted by [`check`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryShape {
    /// `(` and `NOT` operators in the string: an upper bound on its nesting.
    pub nesting: usize,
    /// Terms, counted as [`QueryLimits::max_terms`] says.
    pub terms: usize,
    /// Prefix terms.
    pub prefix_terms: usize,
    /// Ranges.
    pub ranges: usize,
}

thread_local! {
    /// The last query this thread found valid, with the limits it was
    /// checked against and its shape. Parsing is the costly part of a
    /// check, and one query is often checked several times in a row on one
    /// thread: by the root and then by each node of a tree run in one
    /// process (the simulator's thousands of inner nodes).
    static LAST_VALID: RefCell<Option<(String, QueryLimits, QueryShape)>> =
        const { RefCell::new(None) };
}

/// Checks `query` against `limits`; see the module documentation for what
/// is checked, in which order, and why.
pub fn check(query: &str, limits: &QueryLimits) -> Result<QueryShape, QueryError> {
    let known = LAST_VALID.with_borrow(|last| {
        last.as_ref()
            .filter(|(q, l, _)| q == query && l == limits)
            .map(|(_, _, shape)| *shape)
    });
    if let Some(shape) = known {
        return Ok(shape);
    }
    let shape = check_anew(query, limits)?;
    LAST_VALID.with_borrow_mut(|last| match last {
        Some((q, l, s)) => {
            q.clear();
            q.push_str(query);
            *l = *limits;
            *s = shape;
        }
        None => *last = Some((query.to_owned(), *limits, shape)),
    });
    Ok(shape)
}

/// [`check`] without the memory of the last valid query.
fn check_anew(query: &str, limits: &QueryLimits) -> Result<QueryShape, QueryError> {
    if query.trim().is_empty() {
        return Err(QueryError::Empty);
    }
    if query.len() > limits.max_bytes {
        return Err(QueryError::TooLong {
            bytes: query.len(),
            limit: limits.max_bytes,
        });
    }
    let nesting = nesting_bound(query);
    let max_nesting = limits.max_nesting.min(HARD_MAX_NESTING);
    if nesting > max_nesting {
        return Err(QueryError::TooDeep {
            found: nesting,
            limit: max_nesting,
        });
    }
    let ast = tantivy_query_grammar::parse_query(query).map_err(|_| QueryError::Syntax {
        query: Quoted::new(query),
        hint: syntax_hint(query),
    })?;
    let mut shape = measure(&ast, limits)?;
    shape.nesting = nesting;
    if shape.terms > limits.max_terms {
        return Err(QueryError::TooManyTerms {
            found: shape.terms,
            limit: limits.max_terms,
        });
    }
    if shape.prefix_terms > limits.max_prefix_terms {
        return Err(QueryError::TooManyPrefixes {
            found: shape.prefix_terms,
            limit: limits.max_prefix_terms,
        });
    }
    if shape.ranges > limits.max_ranges {
        return Err(QueryError::TooManyRanges {
            found: shape.ranges,
            limit: limits.max_ranges,
        });
    }
    Ok(shape)
}

/// The number of `(` plus the number of `NOT` followed by white space in
/// `query`: every level of recursion in the grammar starts with one of them
/// (its NOT operator is `NOT` and at least one white-space character),
/// wherever they stand. `NOT` inside a word (NOTHING, ANNOTATE) is no
/// operator and is not counted.
fn nesting_bound(query: &str) -> usize {
    let bytes = query.as_bytes();
    let parens = bytes.iter().filter(|&&b| b == b'(').count();
    let nots = bytes
        .windows(4)
        .filter(|w| &w[..3] == b"NOT" && w[3].is_ascii_whitespace())
        .count();
    parens + nots
}

/// Where the grammar first gave up, from its lenient mode, which reports
/// positions. Only called on strings whose nesting is already bounded.
fn syntax_hint(query: &str) -> String {
    let errors = std::panic::catch_unwind(|| tantivy_query_grammar::parse_query_lenient(query).1);
    match errors.ok().and_then(|e| e.into_iter().next()) {
        Some(e) => format!(
            "at byte {}: {}",
            e.pos,
            truncate_chars(&e.message, QUOTED_QUERY_CHARS)
        ),
        None => "check quotes, parentheses, ranges ([a TO b]) and field:value pairs".into(),
    }
}

/// Counts what the parsed query will cost and refuses what no shard can
/// answer. Iterative: the depth is bounded already, but nothing here needs
/// recursion.
fn measure(ast: &UserInputAst, limits: &QueryLimits) -> Result<QueryShape, QueryError> {
    let mut shape = QueryShape::default();
    // Whether a leaf outside every exclusion can match a document: a query
    // without one matches nothing on any shard, which is the caller's
    // mistake to hear about, not an empty answer.
    let mut can_match = false;
    // Each node with the product of the boosts above it (nested boosts
    // multiply, and 13 levels of ^1000 overflow a score to infinity), and
    // whether no exclusion (-x, NOT x) stands above it.
    let mut stack = vec![(ast, 1.0_f64, true)];
    while let Some((node, above, included)) = stack.pop() {
        match node {
            UserInputAst::Clause(clauses) => {
                stack.extend(
                    clauses.iter().map(|(occur, ast)| {
                        (ast, above, included && *occur != Some(Occur::MustNot))
                    }),
                );
            }
            UserInputAst::Boost(inner, boost) => {
                let boost = boost.into_inner();
                let total = above * boost;
                if !(boost.is_finite() && boost > 0.0 && total <= limits.max_boost) {
                    return Err(QueryError::Boost {
                        found: truncate_chars(&format!("{total:e}"), 12),
                        limit: limits.max_boost,
                    });
                }
                stack.push((inner, total, included));
            }
            UserInputAst::Leaf(leaf) => {
                measure_leaf(leaf, &mut shape)?;
                can_match |= included && leaf_can_match(leaf);
            }
        }
    }
    if !can_match {
        return Err(QueryError::NothingToMatch);
    }
    Ok(shape)
}

/// Whether `leaf` can match a document: a term or phrase on a tokenized
/// field can only if the index's tokenizer finds a word in it (a run of
/// letters and digits shorter than [`LEFT_OUT_WORD_BYTES`]); an id, a range,
/// a set, `*` and `field:*` always can.
fn leaf_can_match(leaf: &UserInputLeaf) -> bool {
    match leaf {
        UserInputLeaf::Literal(literal) if literal.field_name.as_deref() != Some("id") => {
            tokens(&literal.phrase).any(|word| word.len() < LEFT_OUT_WORD_BYTES)
        }
        _ => true,
    }
}

/// The tokens of `phrase` as the index's tokenizer splits it: runs of
/// letters and digits (before it leaves out the long ones).
fn tokens(phrase: &str) -> impl Iterator<Item = &str> {
    phrase
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
}

fn measure_leaf(leaf: &UserInputLeaf, shape: &mut QueryShape) -> Result<(), QueryError> {
    match leaf {
        UserInputLeaf::Literal(literal) => {
            known_field(literal.field_name.as_deref())?;
            let words = literal.phrase.split_whitespace().count();
            // "a.b.c" is one word but three positions.
            let tokens = tokens(&literal.phrase).count();
            if literal.slop > 0
                && (literal.slop > MAX_PHRASE_SLOP || tokens > MAX_SLOPPY_PHRASE_WORDS)
            {
                return Err(QueryError::SloppyPhrase {
                    slop: literal.slop,
                    words: tokens,
                });
            }
            shape.terms += words.max(1);
            if literal.prefix {
                shape.prefix_terms += 1;
            }
        }
        UserInputLeaf::All => shape.terms += 1,
        UserInputLeaf::Range { field, .. } => {
            known_field(field.as_deref())?;
            shape.terms += 1;
            shape.ranges += 1;
        }
        UserInputLeaf::Set { field, elements } => {
            known_field(field.as_deref())?;
            shape.terms += elements.len().max(1);
        }
        UserInputLeaf::Exists { field } => {
            known_field(Some(field))?;
            if !EXISTS_FIELDS.contains(&field.as_str()) {
                return Err(QueryError::ExistsUnsupported {
                    field: Quoted::new(field),
                });
            }
            shape.terms += 1;
        }
        UserInputLeaf::Regex { .. } => return Err(QueryError::Regex),
    }
    Ok(())
}

fn known_field(field: Option<&str>) -> Result<(), QueryError> {
    match field {
        Some(f) if !FIELDS.contains(&f) => Err(QueryError::UnknownField {
            field: Quoted::new(f),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_default(q: &str) -> Result<QueryShape, QueryError> {
        check(q, &QueryLimits::default())
    }

    #[test]
    fn ordinary_queries_pass_and_are_measured() {
        for q in [
            "rust",
            "title:paris",
            "\"new york\" -city",
            "+a +b c OR d",
            "(a OR b) AND NOT c",
            "title:(paris OR london)",
            "body:[a TO c]",
            "id:*",
            "*",
            "rust^2.5 lang",
            "\"foo ba\"*",
            "id: IN [a b c]",
            "paris ...",
            "id:...",
            "café",
            "東京",
            &format!("{} ok", "x".repeat(60)),
        ] {
            assert!(check_default(q).is_ok(), "{q}: {:?}", check_default(q));
        }
        let shape = check_default("\"new york city\" title:paris \"foo\"*").unwrap();
        assert_eq!((shape.terms, shape.prefix_terms), (5, 1));
        assert_eq!(check_default("(a OR (b AND NOT c))").unwrap().nesting, 3);
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        // The query of death: thousands of unbalanced parentheses.
        let err = check_default(&"(".repeat(2200)).unwrap_err();
        assert_eq!(
            err,
            QueryError::TooDeep {
                found: 2200,
                limit: DEFAULT_MAX_NESTING
            }
        );
        assert!(check_default(&format!("{}a", "NOT ".repeat(900))).is_err());
        // A sloppy phrase is bounded in slop and words (tokens, as the
        // index splits them); a phrase without slop only by the term limit.
        let attack = format!("\"{}\"~255", "the of and in a to was is ".repeat(4).trim());
        assert!(matches!(
            check_default(&attack),
            Err(QueryError::SloppyPhrase {
                slop: 255,
                words: 32
            })
        ));
        assert!(check_default("\"the of and in a to was is\"~16").is_ok());
        assert!(matches!(
            check_default("\"a b\"~17"),
            Err(QueryError::SloppyPhrase { slop: 17, .. })
        ));
        assert!(matches!(
            check_default("\"a.b.c.d.e.f.g.h.i\"~2"),
            Err(QueryError::SloppyPhrase { words: 9, .. })
        ));
        assert!(check_default(&format!("\"{}\"", "the of ".repeat(30))).is_ok());
        // Nested boosts multiply: each within the limit, their product not.
        let nested = format!("{}paris{}", "(".repeat(13), ")^1000".repeat(13));
        assert!(matches!(
            check_default(&nested),
            Err(QueryError::Boost { .. })
        ));
        assert!(check_default("((paris)^10)^100").is_ok());
        assert!(check_default("((paris)^10)^101").is_err());
        assert!(check_default("(paris^1000) (rome^1000)").is_ok());
        // Upper-case words holding NOT are terms, not levels.
        let shouting = "NOTHING ANNOTATED NOTABLE ".repeat(40);
        assert_eq!(check_default(&shouting).unwrap().nesting, 0);
        assert_eq!(check_default("a AND NOT\tb").unwrap().nesting, 1);
        // Quotes cannot hide parentheses from the count.
        let sneaky = "(\"))))\" ".repeat(40);
        assert!(matches!(
            check_default(&sneaky),
            Err(QueryError::TooDeep { .. })
        ));
        // At the limit is fine.
        let ok = format!("{}a{}", "(".repeat(32), ")".repeat(32));
        assert!(check_default(&ok).is_ok());
    }

    #[test]
    fn meaning_and_cost_are_checked() {
        assert!(matches!(
            check_default("title:*"),
            Err(QueryError::ExistsUnsupported { .. })
        ));
        assert!(matches!(
            check_default("author:bob"),
            Err(QueryError::UnknownField { .. })
        ));
        assert_eq!(check_default("title:/ab.*/"), Err(QueryError::Regex));
        assert!(matches!(
            check_default("a^5000"),
            Err(QueryError::Boost { .. })
        ));
        assert!(matches!(
            // Distinct words: the grammar merges repeated ones.
            check_default(&(0..200).map(|i| format!("w{i} ")).collect::<String>()),
            Err(QueryError::TooManyTerms {
                found: 200,
                limit: 128
            })
        ));
        assert!(matches!(
            check_default(&(0..9).map(|i| format!("\"w{i}\"* ")).collect::<String>()),
            Err(QueryError::TooManyPrefixes { found: 9, .. })
        ));
        assert!(matches!(
            check_default(
                &(0..5)
                    .map(|i| format!("body:[a TO b{i}] "))
                    .collect::<String>()
            ),
            Err(QueryError::TooManyRanges { found: 5, .. })
        ));
    }

    #[test]
    fn a_query_with_nothing_to_search_for_is_refused() {
        for q in [
            "...",
            "!!!",
            "title:\"...\"",
            "\u{1f389}",
            "\u{200b}",
            "-paris",
            "NOT paris",
            "-(paris london)",
            "... -paris",
            "\"...\"*",
            "body:(\"--\" OR ++)",
            &"x".repeat(40),
            &format!("title:{}", "\u{e9}".repeat(20)),
        ] {
            assert_eq!(check_default(q), Err(QueryError::NothingToMatch), "{q:?}");
        }
        // A word of 39 bytes is indexed; one of 40 is not.
        assert!(check_default(&"x".repeat(39)).is_ok());
    }

    #[test]
    fn messages_are_short_and_quote_the_query_once() {
        let hostile = format!("title:{}", "\"".repeat(3000));
        let err = check_default(&hostile).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, QueryError::Syntax { .. }), "{msg}");
        assert!(msg.len() < 256, "{} bytes: {msg}", msg.len());
        assert!(msg.contains('…'));
        let msg = check_default("title:").unwrap_err().to_string();
        assert!(msg.contains("at byte 6"), "{msg}");
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate_chars("héllo", 2), "hé…");
        assert_eq!(truncate_chars("hé", 2), "hé");
        let t = truncate_bytes("ééééé", 6);
        assert!(t.len() <= 6 && t.ends_with('…'), "{t}");
        assert_eq!(truncate_bytes("short", 100), "short");
    }

    #[test]
    fn a_remembered_query_is_still_checked_against_other_limits() {
        let q = "alpha beta gamma";
        let wide = QueryLimits::default();
        let narrow = QueryLimits {
            max_terms: 2,
            ..QueryLimits::default()
        };
        let shape = check(q, &wide).unwrap();
        assert_eq!(shape.terms, 3);
        assert_eq!(check(q, &wide).unwrap(), shape, "remembered");
        assert!(matches!(
            check(q, &narrow),
            Err(QueryError::TooManyTerms { found: 3, limit: 2 })
        ));
        // An invalid query is never remembered as valid.
        assert!(check("(alpha", &wide).is_err());
        assert!(check("(alpha", &wide).is_err());
        assert_eq!(check(q, &wide).unwrap(), shape);
    }

    #[test]
    fn limits_cannot_unbound_the_parser() {
        let loose = QueryLimits {
            max_nesting: 5000,
            ..QueryLimits::default()
        };
        assert!(loose.validate().is_err());
        // Even unvalidated limits are capped.
        assert!(matches!(
            check(&"(".repeat(500), &loose),
            Err(QueryError::TooDeep { limit: 100, .. })
        ));
    }
}
