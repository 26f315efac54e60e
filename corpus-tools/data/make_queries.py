#!/usr/bin/env python3
"""Draw a fixed set of BM25 benchmark queries from wiki-summaries.jsonl.gz.

Usage:
    python3 make_queries.py CORPUS_JSONL_GZ OUTPUT_TXT [--seed N] [--count N]

Reads the corpus written by convert_wiki.py ({"id","title","body"} per line)
and writes one query per line in tantivy query-parser syntax, meant to be run
with default fields title and body. Python 3 stdlib only; the output depends
only on the corpus and the seed (default 20240601), so re-running gives the
same file.

Mix (for --count 300):
  * 120 title queries      - a whole article title of 1-3 words ("black death")
  * 120 extract queries    - 1-3 salient (high tf-idf) words of one extract
  *  30 phrase queries     - "w1 w2", two adjacent salient words that occur
                             together in at least two bodies
  *  15 boolean queries    - +a -b, +a +b -c, a +b -c
  *  15 field queries      - title:word, sometimes followed by a body word
Every word is lowercase [a-z0-9]+; the only other characters used are space,
'"', '+', '-' and the ':' of "title:". Standalone and/or/not/in are never
used, so no query can be read as an operator.

Every query is checked to match at least one document, using the tokenisation
tantivy's default tokenizer applies (split on non-alphanumeric characters,
lowercase): all required/plain words occur in one document's title+body
tokens, no excluded word does, a phrase occurs as adjacent tokens of a body,
and a title: word occurs among that document's title tokens. (Plain words are
checked as if all were required, which is stricter than tantivy's default OR.)
"""
import argparse
import collections
import gzip
import json
import math
import random
import re
import sys

DEFAULT_SEED = 20240601

STOPWORDS = frozenset("""
a about above after again against all also although am among an and any are
as at be because been before being below between both but by can could did
do does doing down during each either few for from further had has have having
he her here hers herself him himself his how however i if in into is it its
itself just known later made many may me more most much must my myself no nor
not now of off often on once one only or other our ours ourselves out over own
same several she should since so some such than that the their theirs them
themselves then there these they this those through thus to too two under
until up upon use used very was we well were what when where whether which
while who whom whose why will with within without would you your yours
yourself yourselves first new including include includes called became become
part known form forms three four five number type types term especially
usually generally commonly century centuries sometimes primarily mainly
important large small different described significant various main based
related world near contains listed applied added
""".split())
# Never used as a query word: uppercase forms are query-parser operators.
OPERATOR_WORDS = frozenset({"and", "or", "not", "in"})
WORD_RE = re.compile(r"^[a-z0-9]+$")


def tokenize(text):
    """Approximate tantivy's SimpleTokenizer + LowerCaser."""
    out, cur = [], []
    for ch in text:
        if ch.isalnum():
            cur.append(ch)
        elif cur:
            out.append("".join(cur).lower())
            cur = []
    if cur:
        out.append("".join(cur).lower())
    return out


def ok_word(w):
    return bool(WORD_RE.match(w)) and w not in OPERATOR_WORDS


def salient_word(w):
    return ok_word(w) and w not in STOPWORDS and len(w) >= 4 and not w.isdigit()


class Corpus:
    def __init__(self, path):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            self.docs = [json.loads(line) for line in f if line.strip()]
        self.title_toks = [tokenize(d["title"]) for d in self.docs]
        self.body_toks = [tokenize(d["body"]) for d in self.docs]
        self.all_sets = [set(t) | set(b) for t, b in
                         zip(self.title_toks, self.body_toks)]
        self.title_sets = [set(t) for t in self.title_toks]
        self.df = collections.Counter()
        for s in self.all_sets:
            self.df.update(s)
        self.n = len(self.docs)
        self.postings = collections.defaultdict(list)
        for i, s in enumerate(self.all_sets):
            for w in s:
                self.postings[w].append(i)
        # Document frequency of adjacent salient-word pairs in bodies.
        self.bigram_df = collections.Counter()
        for toks in self.body_toks:
            self.bigram_df.update(set(
                (a, b) for a, b in zip(toks, toks[1:])
                if a != b and salient_word(a) and salient_word(b)))

    def idf(self, w):
        return math.log(self.n / (1 + self.df[w]))

    def top_salient(self, i, k=10):
        """Salient words of document i by tf-idf, best first (ties by word)."""
        tf = collections.Counter(w for w in self.body_toks[i] if salient_word(w))
        scored = sorted(((-c * self.idf(w), w) for w, c in tf.items()
                         if 2 <= self.df[w] <= self.n // 20))
        return [w for _, w in scored[:k]]

    # --- matching check -------------------------------------------------
    def matches(self, query):
        """True if some document satisfies the parsed query (see docstring)."""
        phrases = re.findall(r'"([^"]*)"', query)
        rest = re.sub(r'"[^"]*"', " ", query).split()
        required, excluded, title_req = [], [], []
        for tok in rest:
            if tok.startswith("-"):
                excluded.append(tok[1:])
            elif tok.startswith("+"):
                required.append(tok[1:])
            elif tok.startswith("title:"):
                title_req.append(tok[len("title:"):])
            else:
                required.append(tok)
        if not (phrases or required or title_req):
            return False
        positive = required + title_req
        if positive:
            cands = set(self.postings.get(positive[0], ()))
            for w in positive[1:]:
                cands &= set(self.postings.get(w, ()))
        else:
            cands = range(self.n)
        for i in sorted(cands):
            s = self.all_sets[i]
            if any(w not in s for w in required):
                continue
            if any(w in s for w in excluded):
                continue
            if any(w not in self.title_sets[i] for w in title_req):
                continue
            if all(self._has_phrase(i, p.split()) for p in phrases):
                return True
        return False

    def _has_phrase(self, i, words):
        toks = self.body_toks[i]
        k = len(words)
        return any(toks[j:j + k] == words for j in range(len(toks) - k + 1))


def valid_syntax(q):
    if not q or q != q.strip() or "  " in q or q.count('"') % 2:
        return False
    body = re.sub(r'"[a-z0-9]+ [a-z0-9]+"', "", q)
    if '"' in body:
        return False
    for tok in body.split():
        tok = tok[1:] if tok[:1] in "+-" else tok
        tok = tok[len("title:"):] if tok.startswith("title:") else tok
        if not ok_word(tok):
            return False
    return True


def gen_title(c, rng):
    i = rng.randrange(c.n)
    toks = c.title_toks[i]
    if not 1 <= len(toks) <= 3 or not all(ok_word(w) for w in toks):
        return None
    if all(w in STOPWORDS or w.isdigit() for w in toks):
        return None
    return " ".join(toks)


def gen_extract(c, rng):
    i = rng.randrange(c.n)
    top = c.top_salient(i)
    k = rng.choice((1, 2, 3))
    if len(top) < k:
        return None
    return " ".join(rng.sample(top, k))


def gen_phrase(c, rng):
    i = rng.randrange(c.n)
    toks = c.body_toks[i]
    # Pairs seen in at least two bodies read as real phrases
    # ("infectious disease"), not accidents of one sentence.
    pairs = sorted(set((a, b) for a, b in zip(toks, toks[1:])
                       if c.bigram_df.get((a, b), 0) >= 2))
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    return '"%s %s"' % (a, b)


def gen_boolean(c, rng):
    i = rng.randrange(c.n)
    top = c.top_salient(i, 6)
    if len(top) < 2:
        return None
    a = top[0]
    # Exclude a word that co-occurs with `a` elsewhere but not in doc i,
    # so the minus clause actually removes some hits.
    co = collections.Counter()
    for j in c.postings[a]:
        if j != i:
            co.update(w for w in c.all_sets[j] if salient_word(w))
    excl = sorted((w for w, n in co.items()
                   if n >= 2 and w not in c.all_sets[i] and w != a),
                  key=lambda w: (-co[w], w))[:10]
    if not excl:
        return None
    b = rng.choice(excl)
    form = rng.randrange(3)
    if form == 0:
        return "+%s -%s" % (a, b)
    if form == 1:
        return "+%s +%s -%s" % (a, top[1], b)
    return "%s +%s -%s" % (top[1], a, b)


def gen_field(c, rng):
    i = rng.randrange(c.n)
    words = [w for w in c.title_toks[i] if salient_word(w)]
    if not words:
        return None
    w = rng.choice(words)
    if rng.random() < 0.3:
        top = [x for x in c.top_salient(i, 5) if x != w]
        if top:
            return "title:%s %s" % (w, rng.choice(top))
    return "title:%s" % w


def build(corpus, seed, count):
    rng = random.Random(seed)
    quotas = collections.OrderedDict()
    quotas["phrase"] = round(count * 0.10)
    quotas["boolean"] = round(count * 0.05)
    quotas["field"] = round(count * 0.05)
    rest = count - sum(quotas.values())
    quotas["title"] = rest // 2
    quotas["extract"] = rest - rest // 2
    gens = {"title": gen_title, "extract": gen_extract, "phrase": gen_phrase,
            "boolean": gen_boolean, "field": gen_field}
    seen = set()
    out = []
    for kind, quota in quotas.items():
        got, tries = 0, 0
        while got < quota:
            tries += 1
            if tries > 200000:
                raise SystemExit("could not draw enough %s queries" % kind)
            q = gens[kind](corpus, rng)
            if q is None or q in seen or not valid_syntax(q):
                continue
            if not corpus.matches(q):
                continue
            seen.add(q)
            out.append((kind, q))
            got += 1
    rng.shuffle(out)
    return out


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("output")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--count", type=int, default=300)
    args = ap.parse_args(argv[1:])
    corpus = Corpus(args.corpus)
    queries = build(corpus, args.seed, args.count)
    # Final self-check over the whole file.
    texts = [q for _, q in queries]
    assert len(texts) == len(set(texts)) == args.count
    assert all(valid_syntax(q) and corpus.matches(q) for q in texts)
    with open(args.output, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(texts) + "\n")
    kinds = collections.Counter(k for k, _ in queries)
    lens = collections.Counter(
        len(re.sub(r'"[^"]*"', "P", q).split()) for q in texts)
    print("documents: %d" % corpus.n, file=sys.stderr)
    print("queries: %d %s" % (len(texts), dict(sorted(kinds.items()))),
          file=sys.stderr)
    print("clauses per query: %s" % dict(sorted(lens.items())), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
