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
//!
//! On long documents the rest was splitting the body into tokens, which
//! tantivy's `default` analyzer does a character at a time. A body indexed
//! with that analyzer (every `TEXT` field of the schema) is split here
//! instead, into the same tokens ([`default_tokens`], tested against the
//! analyzer): an ASCII body 64 bytes at a time through bit masks.

use std::ops::Range;

use tantivy::Score;
use tantivy::tokenizer::TextAnalyzer;

/// Finds and highlights the best passage of a text for one query.
#[derive(Clone)]
pub struct Highlighter {
    /// The query's terms in the highlighted field, as the analyzer makes
    /// them, with their weights.
    terms: Vec<(String, Score)>,
    /// Bit n is set when a term is n bytes long (n < 64): most tokens of a
    /// text are no term's length, and are passed over on that alone.
    term_lengths: u64,
    tokens: Tokens,
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

/// How a text is split into the tokens its field was indexed with.
#[derive(Clone)]
enum Tokens {
    /// tantivy's `default` analyzer, by [`default_tokens`].
    Default,
    /// Any other analyzer, run as it is.
    Analyzer(TextAnalyzer),
}

/// The longest token tantivy's `default` analyzer keeps, exclusive, in
/// bytes of the text (its `RemoveLongFilter::limit(40)`).
const DEFAULT_TOKEN_LIMIT: usize = 40;

impl Highlighter {
    /// A highlighter of `terms` (each term once, with its weight), cutting
    /// passages of at most `max_bytes` from texts `tokenizer` splits.
    pub fn new(
        terms: impl IntoIterator<Item = (String, Score)>,
        tokenizer: TextAnalyzer,
        max_bytes: usize,
    ) -> Self {
        Self::splitting(terms, Tokens::Analyzer(tokenizer), max_bytes)
    }

    /// A highlighter of texts indexed with tantivy's `default` analyzer
    /// (the schema's `TEXT` fields), which splits them itself, the same
    /// way at a fraction of the cost ([`default_tokens`]).
    pub fn for_default_analyzer(
        terms: impl IntoIterator<Item = (String, Score)>,
        max_bytes: usize,
    ) -> Self {
        Self::splitting(terms, Tokens::Default, max_bytes)
    }

    /// A highlighter of `terms` splitting texts by `tokens`: what both
    /// constructors make.
    fn splitting(
        terms: impl IntoIterator<Item = (String, Score)>,
        tokens: Tokens,
        max_bytes: usize,
    ) -> Self {
        let terms: Vec<(String, Score)> = terms.into_iter().collect();
        Highlighter {
            term_lengths: lengths_of(&terms),
            terms,
            tokens,
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
        self.term_weight(key)
    }

    /// The weight of a token of an ASCII text split by [`ascii_tokens`],
    /// which is lowercase already: [`Highlighter::weight`] without looking
    /// at its bytes again, and none at once for a length no term has.
    fn weight_of_lowercase(&self, token: &str) -> Option<Score> {
        let len = token.len();
        if len >= 64 || (self.term_lengths >> len) & 1 == 0 {
            return None;
        }
        self.term_weight(token)
    }

    /// The weight of the term `key`, if it is one of the query's.
    fn term_weight(&self, key: &str) -> Option<Score> {
        self.terms
            .iter()
            .find(|(term, _)| term == key)
            .map(|&(_, weight)| weight)
    }

    /// The snippet of `text` as HTML: its best passage, the query's terms in
    /// `<b>`, the rest escaped; empty if no term of the query is in it.
    pub fn html(&self, text: &str) -> String {
        let mut best: Option<Passage> = None;
        let mut current = Passage::starting_at(0);
        let split_ascii = matches!(self.tokens, Tokens::Default) && text.is_ascii();
        let mut take = |from: usize, to: usize, token: &str| {
            if to - current.start > self.max_bytes {
                let next = Passage::starting_at(from);
                keep_better(&mut best, std::mem::replace(&mut current, next));
            }
            current.stop = to;
            let weight = if split_ascii {
                self.weight_of_lowercase(token)
            } else {
                self.weight(token)
            };
            if let Some(weight) = weight {
                current.score += weight;
                current.highlighted.push(from..to);
            }
        };
        match &self.tokens {
            // (Splits an ASCII text with `ascii_tokens`, as `split_ascii` says.)
            Tokens::Default => default_tokens(text, take),
            Tokens::Analyzer(analyzer) => {
                let mut analyzer = analyzer.clone();
                let mut tokens = analyzer.token_stream(text);
                while let Some(token) = tokens.next() {
                    take(token.offset_from, token.offset_to, &token.text);
                }
            }
        }
        keep_better(&mut best, current);
        best.map_or_else(String::new, |passage| render(text, passage))
    }
}

/// What each ASCII byte is to tantivy's `SimpleTokenizer`: not part of a
/// token ([`SEPARATOR`]), part of one ([`LOWER`]: a digit or a lowercase
/// letter), or part of one that needs lowercasing ([`UPPER`]); what
/// `char::is_alphanumeric` says of it, looked up.
const ASCII_CLASS: [u8; 128] = {
    let mut table = [SEPARATOR; 128];
    let mut b = 0;
    while b < 128 {
        let byte = b as u8;
        if byte.is_ascii_uppercase() {
            table[b] = UPPER;
        } else if byte.is_ascii_alphanumeric() {
            table[b] = LOWER;
        }
        b += 1;
    }
    table
};
const SEPARATOR: u8 = 0;
const LOWER: u8 = 1;
const UPPER: u8 = 2;

/// Calls `take(from, to, token)` for each token of `text` as tantivy's
/// `default` analyzer makes it — `SimpleTokenizer` (runs of alphanumeric
/// characters), `RemoveLongFilter::limit(40)` (tokens of 40 bytes or more
/// dropped), `LowerCaser` (ASCII lowercased in place, anything else a
/// character at a time) — with its byte offsets. The analyzer walks every
/// character through `char_indices` and copies every token; this walks the
/// bytes of an ASCII text through a table, and copies only a token that
/// needs lowercasing. A text with other characters goes a character at a
/// time, as the analyzer does.
fn default_tokens(text: &str, take: impl FnMut(usize, usize, &str)) {
    if text.is_ascii() {
        ascii_tokens(text, take);
    } else {
        unicode_tokens(text, take);
    }
}

/// [`default_tokens`] of an ASCII text, 64 bytes at a time: each byte's
/// class goes into a bit mask, and the tokens' starts and ends are the
/// mask's edges, found with `trailing_zeros` rather than a branch per byte.
fn ascii_tokens(text: &str, mut take: impl FnMut(usize, usize, &str)) {
    let bytes = text.as_bytes();
    let mut lowered = String::new();
    let mut emit = |from: usize, to: usize, upper: bool| {
        if to - from >= DEFAULT_TOKEN_LIMIT {
            return;
        }
        let token = &text[from..to];
        if upper {
            lowered.clear();
            lowered.push_str(token);
            lowered.make_ascii_lowercase();
            take(from, to, &lowered);
        } else {
            take(from, to, token);
        }
    };
    // The token the last chunk ended in: where it started, and whether it
    // has a capital so far.
    let mut open: Option<(usize, bool)> = None;
    for (chunk_index, chunk) in bytes.chunks(64).enumerate() {
        let base = chunk_index * 64;
        let (mut alphanumeric, mut upper) = (0u64, 0u64);
        for (i, &byte) in chunk.iter().enumerate() {
            let class = ASCII_CLASS[usize::from(byte & 0x7f)];
            alphanumeric |= u64::from(class != SEPARATOR) << i;
            upper |= u64::from(class == UPPER) << i;
        }
        let before = (alphanumeric << 1) | u64::from(open.is_some());
        let starts = alphanumeric & !before;
        // Past a short last chunk the mask is 0: its last token ends there.
        let ends = !alphanumeric & before & low_bits(chunk.len() + 1);
        // Starts and ends alternate: a token open from the last chunk
        // takes the first end, and each start the end after it.
        let (mut starts, mut ends) = (starts, ends);
        let capital_in =
            |from_bit: usize, to_bit: usize| (upper & low_bits(to_bit)) >> from_bit != 0;
        if let Some((from, capital)) = open {
            if ends == 0 {
                open = Some((from, capital || capital_in(0, 64)));
                continue;
            }
            let to_bit = ends.trailing_zeros() as usize;
            ends &= ends - 1;
            emit(from, base + to_bit, capital || capital_in(0, to_bit));
            open = None;
        }
        while starts != 0 {
            let from_bit = starts.trailing_zeros() as usize;
            starts &= starts - 1;
            if ends == 0 {
                open = Some((base + from_bit, capital_in(from_bit, 64)));
                break;
            }
            let to_bit = ends.trailing_zeros() as usize;
            ends &= ends - 1;
            emit(base + from_bit, base + to_bit, capital_in(from_bit, to_bit));
        }
    }
    if let Some((from, capital)) = open {
        emit(from, bytes.len(), capital);
    }
}

/// A mask of the `n` lowest bits (all 64 from 64 on).
fn low_bits(n: usize) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// [`default_tokens`] of a text with characters beyond ASCII.
fn unicode_tokens(text: &str, mut take: impl FnMut(usize, usize, &str)) {
    let mut lowered = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((from, c)) = chars.next() {
        if !c.is_alphanumeric() {
            continue;
        }
        let mut to = from + c.len_utf8();
        while let Some(&(at, c)) = chars.peek() {
            if !c.is_alphanumeric() {
                break;
            }
            to = at + c.len_utf8();
            chars.next();
        }
        if to - from >= DEFAULT_TOKEN_LIMIT {
            continue;
        }
        let token = &text[from..to];
        lowered.clear();
        if token.is_ascii() {
            lowered.push_str(token);
            lowered.make_ascii_lowercase();
        } else {
            lowered.extend(token.chars().flat_map(char::to_lowercase));
        }
        take(from, to, &lowered);
    }
}

/// The set of the terms' lengths in bytes, as [`Highlighter::term_lengths`].
fn lengths_of(terms: &[(String, Score)]) -> u64 {
    terms
        .iter()
        .filter(|(term, _)| term.len() < 64)
        .fold(0, |lengths, (term, _)| lengths | 1 << term.len())
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
        let ours = Highlighter::for_default_analyzer(weights.clone(), max_bytes);
        let analyzed = Highlighter::new(weights.clone(), tokenizer.clone(), max_bytes);
        let theirs = SnippetGenerator::new(weights, tokenizer, fields.body, max_bytes);
        let ours = ours.html(text);
        assert_eq!(
            ours,
            analyzed.html(text),
            "{text:?}: the two ways of splitting"
        );
        (ours, theirs.snippet(text).to_html())
    }

    /// Tokens with their byte offsets: (from, to, text).
    type Split = Vec<(usize, usize, String)>;

    /// The tokens of [`default_tokens`] and of tantivy's `default` analyzer.
    fn tokens_both_ways(text: &str) -> (Split, Split) {
        let mut analyzer = tantivy::tokenizer::TokenizerManager::default()
            .get("default")
            .unwrap();
        let mut stream = analyzer.token_stream(text);
        let mut theirs = Vec::new();
        while let Some(t) = stream.next() {
            theirs.push((t.offset_from, t.offset_to, t.text.clone()));
        }
        let mut ours = Vec::new();
        default_tokens(text, |from, to, token| {
            ours.push((from, to, token.to_string()))
        });
        (ours, theirs)
    }

    #[test]
    fn the_default_analyzer_s_tokens_exactly() {
        let long = "x".repeat(39);
        let texts = [
            String::new(),
            "  ,,, ".to_string(),
            "Hello, happy tax payer! 42 apples, x86_64 and C++".to_string(),
            "ÜBER über Straße STRASSE İstanbul ǅemal café CAFÉ ΟΔΟΣ Σίσυφος".to_string(),
            "日本語のテキスト、中文文本。한국어 텍스트 ١٢٣ ½ ² Ⅻ".to_string(),
            "emoji 😀 between 🇫🇷 words ‍ zero‍width ẞ ﬁne".to_string(),
            // Around the 40-byte limit, in ASCII and with wider characters.
            format!("{long} {long}y {long}yz é{long} {long}é"),
            "ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖØÙÚÛÜÝ ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖØÙÚÛÜÝÞ".to_string(),
            "tab\tnew\nline\r\nend\u{a0}nbsp\u{2009}thin".to_string(),
            "<a href=\"x\">link</a>&amp;&#x27;".to_string(),
        ];
        for text in &texts {
            let (ours, theirs) = tokens_both_ways(text);
            assert_eq!(ours, theirs, "{text:?}");
        }
        // Random strings over a mixed alphabet.
        let alphabet: Vec<char> = "aZ9 _-.,é€ÖİΣσßǅ日😀\u{300}\u{2028}\t".chars().collect();
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..2_000 {
            let text: String = (0..rng.usize(0..80))
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            let (ours, theirs) = tokens_both_ways(&text);
            assert_eq!(ours, theirs, "{text:?}");
        }
        // ASCII texts, split 64 bytes at a time: tokens across the chunks'
        // edges, at the 40-byte limit, and at the end of the text.
        let ascii: Vec<char> = "aaaaZZ99 .,-_\n".chars().collect();
        for _ in 0..2_000 {
            let text: String = (0..rng.usize(0..300))
                .map(|_| ascii[rng.usize(..ascii.len())])
                .collect();
            assert!(text.is_ascii());
            let (ours, theirs) = tokens_both_ways(&text);
            assert_eq!(ours, theirs, "{text:?}");
        }
        for len in [63, 64, 65, 127, 128, 129] {
            for text in [
                "a".repeat(len),
                format!("{} b", "c".repeat(len)),
                "Ab ".repeat(len),
            ] {
                let (ours, theirs) = tokens_both_ways(&text);
                assert_eq!(ours, theirs, "{text:?}");
            }
        }
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
