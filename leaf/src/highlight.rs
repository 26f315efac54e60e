//! A body's snippet: the passage where the query's terms weigh most, those
//! terms wrapped in `<b>…</b>`, as HTML.
//!
//! The passage and the HTML are tantivy's `SnippetGenerator`'s, byte for
//! byte (the tests below compare the two, and the end-to-end exactness test
//! compares the tree's snippets with tantivy's over the whole corpus); only
//! the cost differs. For every token of the body, tantivy lowercases the
//! token into a new string and looks that up in a `BTreeMap`; it keeps
//! every candidate passage, to pick the best at the end; and it escapes the
//! HTML one character at a time. Here a token the analyzer already
//! lowercased is compared as it is, against the few terms of the query,
//! only the best passage so far is kept, and escaping copies the runs
//! between the characters it replaces. Titles and snippets were the largest
//! part of a leaf's CPU on short documents (BENCHMARKS.md, "Snippets").

use std::ops::Range;

use tantivy::Score;
use tantivy::tokenizer::TextAnalyzer;

/// Finds and highlights the best passage of a text for one query.
#[derive(Clone)]
pub struct Highlighter {
    /// The query's terms in the highlighted field, as the analyzer makes
    /// them, with their weights.
    terms: Vec<(String, Score)>,
    tokenizer: TextAnalyzer,
    /// The longest passage, in bytes from its first token's start to its
    /// last token's end (tantivy's `max_num_chars`).
    max_bytes: usize,
}

/// A candidate passage: from its first token's start to its last token's
/// end, with the weight of the query terms it holds and where they are.
struct Passage {
    start: usize,
    stop: usize,
    score: Score,
    highlighted: Vec<Range<usize>>,
}

impl Passage {
    fn starting_at(start: usize) -> Self {
        Passage {
            start,
            stop: start,
            score: 0.0,
            highlighted: Vec::new(),
        }
    }
}

impl Highlighter {
    /// A highlighter of `terms` (each term once, with its weight), cutting
    /// passages of at most `max_bytes` from texts `tokenizer` splits.
    pub fn new(
        terms: impl IntoIterator<Item = (String, Score)>,
        tokenizer: TextAnalyzer,
        max_bytes: usize,
    ) -> Self {
        Highlighter {
            terms: terms.into_iter().collect(),
            tokenizer,
            max_bytes,
        }
    }

    /// The weight of a token if it is one of the query's terms, compared
    /// lowercased as tantivy compares it.
    fn weight(&self, token: &str) -> Option<Score> {
        let lowered;
        let key = if token
            .bytes()
            .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
        {
            token
        } else {
            lowered = token.to_lowercase();
            lowered.as_str()
        };
        self.terms
            .iter()
            .find(|(term, _)| term == key)
            .map(|&(_, weight)| weight)
    }

    /// The snippet of `text` as HTML: its best passage, the query's terms in
    /// `<b>`, the rest escaped; empty if no term of the query is in it.
    pub fn html(&self, text: &str) -> String {
        let mut tokenizer = self.tokenizer.clone();
        let mut tokens = tokenizer.token_stream(text);
        let mut best: Option<Passage> = None;
        let mut current = Passage::starting_at(0);
        while let Some(token) = tokens.next() {
            if token.offset_to - current.start > self.max_bytes {
                let next = Passage::starting_at(token.offset_from);
                keep_better(&mut best, std::mem::replace(&mut current, next));
            }
            current.stop = token.offset_to;
            if let Some(weight) = self.weight(&token.text) {
                current.score += weight;
                current.highlighted.push(token.offset_from..token.offset_to);
            }
        }
        keep_better(&mut best, current);
        best.map_or_else(String::new, |passage| render(text, passage))
    }
}

/// Keeps `candidate` if it holds a term and weighs more than the best so
/// far: of passages that weigh the same, the first.
fn keep_better(best: &mut Option<Passage>, candidate: Passage) {
    if candidate.score > 0.0 && best.as_ref().is_none_or(|b| candidate.score > b.score) {
        *best = Some(candidate);
    }
}

/// The passage of `text` as HTML, its overlapping highlights merged.
fn render(text: &str, passage: Passage) -> String {
    let fragment = &text[passage.start..passage.stop];
    let mut ranges: Vec<Range<usize>> = passage
        .highlighted
        .into_iter()
        .map(|r| r.start - passage.start..r.end - passage.start)
        .collect();
    ranges.sort_by_key(|r| (r.start, r.end));
    ranges.dedup();
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            // Only a true overlap merges; adjacent terms stay apart.
            Some(last) if last.end > range.start => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    let mut html = String::with_capacity(fragment.len() + merged.len() * 7 + 16);
    let mut from = 0;
    for range in merged {
        escape_into(&mut html, &fragment[from..range.start]);
        html.push_str("<b>");
        escape_into(&mut html, &fragment[range.clone()]);
        html.push_str("</b>");
        from = range.end;
    }
    escape_into(&mut html, &fragment[from..]);
    html
}

/// Appends `text` to `html` with `"`, `&`, `'`, `<` and `>` replaced by
/// their entities (htmlescape's `encode_minimal`, which tantivy uses).
fn escape_into(html: &mut String, text: &str) {
    let mut copied = 0;
    for (at, byte) in text.bytes().enumerate() {
        let entity = match byte {
            b'"' => "&quot;",
            b'&' => "&amp;",
            b'\'' => "&#x27;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            _ => continue,
        };
        // ASCII bytes never occur inside a multi-byte character: `at` is a
        // character boundary.
        html.push_str(&text[copied..at]);
        html.push_str(entity);
        copied = at + 1;
    }
    html.push_str(&text[copied..]);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tantivy::Index;
    use tantivy::snippet::SnippetGenerator;

    use super::*;
    use crate::schema;

    /// Ours and tantivy's snippet of `text` for `terms`.
    fn both(terms: &[(&str, Score)], text: &str, max_bytes: usize) -> (String, String) {
        let (schema, fields) = schema::build();
        let index = Index::create_in_ram(schema);
        let tokenizer = index.tokenizer_for_field(fields.body).unwrap();
        let weights: BTreeMap<String, Score> =
            terms.iter().map(|&(t, w)| (t.to_string(), w)).collect();
        let ours = Highlighter::new(weights.clone(), tokenizer.clone(), max_bytes);
        let theirs = SnippetGenerator::new(weights, tokenizer, fields.body, max_bytes);
        (ours.html(text), theirs.snippet(text).to_html())
    }

    #[test]
    fn the_same_snippets_as_tantivy() {
        let texts = [
            "",
            "nothing to see here",
            "The Cat sat on the mat; the cat's <mat> & \"hat\" were 'there'.",
            "cat cat cat dog dog cat",
            "ÜBER über Straße STRASSE İstanbul istanbul ǅemal ǆemal café CAFÉ",
            "a b c d e f g h i j k l m n o p q r s t u v w x y z cat a b c d e f g h i j k l m n o p dog",
            "dog first, then a long stretch of words without any of the terms at all, \
             and then cat and dog together near the end, and one more cat.",
        ];
        let terms: &[&[(&str, Score)]] = &[
            &[("cat", 0.5)],
            &[("cat", 0.5), ("dog", 0.5)],
            &[("cat", 0.1), ("dog", 0.9), ("mat", 0.3)],
            &[
                ("über", 1.0),
                ("straße", 0.2),
                ("istanbul", 0.4),
                ("ǆemal", 0.3),
                ("café", 0.1),
            ],
            &[("zzz", 1.0)],
        ];
        for text in texts {
            for &t in terms {
                for max_bytes in [5, 20, 40, 160] {
                    let (ours, theirs) = both(t, text, max_bytes);
                    assert_eq!(ours, theirs, "{t:?} in {text:?}, {max_bytes} bytes");
                }
            }
        }
    }

    #[test]
    fn generated_texts_give_the_same_snippets_as_tantivy() {
        let words = [
            "cat", "Cat", "CAT", "dog", "mat", "the", "a", "&", "<b>", "'s", "\"x\"", "Öl", "öl",
            "ol", "naïve", "x", "of",
        ];
        let terms = [("cat", 0.25), ("dog", 0.5), ("öl", 0.125), ("naïve", 1.0)];
        let mut rng = fastrand::Rng::with_seed(11);
        let mut highlighted = 0;
        for _ in 0..500 {
            let len = rng.usize(0..60);
            let text: Vec<&str> = (0..len).map(|_| words[rng.usize(..words.len())]).collect();
            let text = text.join(if rng.bool() { " " } else { ", " });
            let max_bytes = rng.usize(1..200);
            let (ours, theirs) = both(&terms, &text, max_bytes);
            assert_eq!(ours, theirs, "{text:?}, {max_bytes} bytes");
            highlighted += usize::from(ours.contains("<b>"));
        }
        assert!(
            highlighted > 250,
            "only {highlighted} of 500 highlight a term"
        );
    }

    #[test]
    fn escaping_replaces_only_the_five_characters() {
        let mut html = String::new();
        escape_into(&mut html, "a<b>&\"c'\"é—");
        assert_eq!(html, "a&lt;b&gt;&amp;&quot;c&#x27;&quot;é—");
    }
}
