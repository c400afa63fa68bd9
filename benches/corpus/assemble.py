#!/usr/bin/env python3
"""Picks documents from SRC/docs/*.jsonl (written by extract.py) into quern's corpora.

Why: the same extracted sources serve four consumers of different sizes, and each
must be reproducible byte for byte from the same packages. Selection is by a
stable hash of the document id (sha1), never by a random generator, so the
output depends only on the extracted documents and the quotas below.

Modes:
  fixture OUT   tests/data/corpus/mixed.jsonl: ~450 documents, < 600 KB, every
                kind of source, ten languages of man pages, junk included
  demo OUT      data/demo/corpus.jsonl: ~5,500 documents, ~6 MB, 25+ languages
  full OUT MB   bench-data/corpus.jsonl: every document, in hash order, until MB
                megabytes are written (all of them if there are fewer)
  lang OUTDIR   bench-data/lang/<lang>.jsonl: paragraphs of known language, up to
                1,000 per language, for language-identification accuracy

Every output line has the fields id, text, source, package, lang (mail also has
label); see extract.py for their meaning.
"""

import glob
import hashlib
import json
import os
import re
import sys
import unicodedata


def h(s, salt=""):
    return hashlib.sha1((salt + s).encode("utf-8")).hexdigest()


def bench_only():
    """Packages tagged `bench` in sources.txt: used by the benchmark corpus only, so
    that adding one never changes the fixture or the demo corpus."""
    names = set()
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "sources.txt")) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and not parts[0].startswith("#") and parts[2] == "bench":
                names.add(parts[1])
    return names


def load(src, skip=()):
    """All extracted documents, grouped by source kind, each group in hash order."""
    by_source = {}
    for path in sorted(glob.glob(os.path.join(src, "docs", "*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                if d["package"] in skip:
                    continue
                by_source.setdefault(d["source"], []).append(d)
    for docs in by_source.values():
        docs.sort(key=lambda d: h(d["id"]))
    return by_source


def pick(docs, n, lo=0, hi=10**9, per_lang=None, where=None):
    """The first n documents (hash order) whose text length is within [lo, hi].

    per_lang caps how many come from one language, so that every language gets
    its share before any gets more.
    """
    out, counts = [], {}
    for d in docs:
        if len(out) >= n:
            break
        if not lo <= len(d["text"]) <= hi or (where and not where(d)):
            continue
        if per_lang is not None:
            if counts.get(d["lang"], 0) >= per_lang:
                continue
            counts[d["lang"]] = counts.get(d["lang"], 0) + 1
        out.append(d)
    return out


# (source, count, min chars, max chars, per-language cap, filter)
FIXTURE = [
    ("manpages", 170, 300, 1800, 17, lambda d: d["lang"] in {"en", "de", "fr", "es", "it", "pl", "ru", "pt", "nl", "ja"}),
    # licence variants are natural near-duplicates: BSD, MIT, Apache, GPL families
    ("licenses", 40, 200, 3000, None, lambda d: re.search(r"/(bsd|mit|x11|isc|apache|zlib|gpl|lgpl)", d["id"])),
    ("licenses", 10, 200, 2500, None, lambda d: not re.search(r"/(bsd|mit|x11|isc|apache|zlib|gpl|lgpl)", d["id"])),
    ("license-rules", 60, 0, 1200, None, None),  # mostly one-line fragments: junk for filters
    ("mail", 50, 0, 2000, None, lambda d: d["label"] == "spam"),
    ("mail", 50, 0, 2000, None, lambda d: d["label"] == "ham"),
    ("python-docs", 20, 400, 3000, None, None),
    ("debian-docs", 10, 400, 3000, None, None),
    ("perl-docs", 5, 400, 3500, None, None),
    ("postgresql-docs", 10, 400, 3000, None, None),
    ("linux-docs", 10, 400, 3000, None, None),
]

DEMO = [
    ("manpages", 2200, 200, 3000, 130, None),
    ("licenses", 250, 100, 3000, None, None),
    ("license-rules", 700, 0, 1500, None, None),
    ("mail", 600, 0, 2500, None, lambda d: d["label"] == "spam"),
    ("mail", 800, 0, 2500, None, lambda d: d["label"] == "ham"),
    ("python-docs", 150, 300, 4000, None, None),
    ("debian-docs", 350, 300, 4000, 20, None),
    ("linux-docs", 150, 300, 4000, None, None),
    ("perl-docs", 30, 300, 5000, None, None),
    ("postgresql-docs", 120, 300, 3000, None, None),
    ("git-docs", 50, 300, 4000, None, None),
    ("sqlite-docs", 50, 300, 3000, None, None),
    ("books", 120, 0, 6000, None, None),
]


def select(by_source, quotas):
    chosen, seen = [], set()
    for source, n, lo, hi, per_lang, where in quotas:
        docs = [d for d in by_source.get(source, []) if d["id"] not in seen]
        got = pick(docs, n, lo, hi, per_lang, where)
        if len(got) < n:
            print(f"note: {source}: {len(got)} of {n} wanted", file=sys.stderr)
        for d in got:
            seen.add(d["id"])
        chosen.extend(got)
    chosen.sort(key=lambda d: h(d["id"], "order"))
    return chosen


def write(path, docs):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    size = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for d in docs:
            line = json.dumps(d, ensure_ascii=False) + "\n"
            size += len(line.encode("utf-8"))
            f.write(line)
    os.replace(tmp, path)
    return size


def summary(docs):
    src, langs = {}, {}
    for d in docs:
        src[d["source"]] = src.get(d["source"], 0) + 1
        langs[d["lang"]] = langs.get(d["lang"], 0) + 1
    return (
        "sources: " + ", ".join(f"{k}={v}" for k, v in sorted(src.items()))
        + "\nlanguages: " + ", ".join(f"{k}={v}" for k, v in sorted(langs.items(), key=lambda kv: -kv[1]))
    )


def full(by_source, out, mb):
    limit = int(mb * 1e6)
    alldocs = sorted((d for docs in by_source.values() for d in docs), key=lambda d: h(d["id"], "order"))
    size = n = 0
    tmp = out + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    kept = []
    with open(tmp, "w", encoding="utf-8") as f:
        for d in alldocs:
            if size >= limit:
                break
            line = json.dumps(d, ensure_ascii=False) + "\n"
            f.write(line)
            size += len(line.encode("utf-8"))
            n += 1
            kept.append({"source": d["source"], "lang": d["lang"]})
    os.replace(tmp, out)
    return n, size, kept


# ------------------------------------------------------------ language test set

SCRIPT = {  # languages whose script alone says a lot: share of letters required in it
    "ja": ("CJK", "HIRAGANA", "KATAKANA"),
    "zh": ("CJK",),
    "ko": ("HANGUL",),
    "ru": ("CYRILLIC",),
    "uk": ("CYRILLIC",),
    "el": ("GREEK",),
    "ar": ("ARABIC",),
    "fa": ("ARABIC",),
}
CODE_CHARS = re.compile(r"[/=_{}\[\]<>|@#$%*\\~^`]|^--?\w|\w\(\d")
EN_WORDS = re.compile(r"\b(the|and|of|to|is|are|with|for|this|that|be|by|which|from)\b", re.I)


def letters_in(text, names):
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    hit = sum(1 for c in letters if any(n in unicodedata.name(c, "") for n in names))
    return hit / len(letters)


def clean_paragraph(p, lang):
    """True when a paragraph is prose of its declared language, not code or leftover English.

    Translated man pages and handbooks keep untranslated English paragraphs and
    command lines; those would be mislabelled, so they are left out.
    """
    # prose, not a command line, a config file, a synopsis or a list of references:
    # mostly letters, few tokens with code punctuation, and a sentence end somewhere
    nonspace = [c for c in p if not c.isspace()]
    letters = sum(1 for c in nonspace if c.isalpha())
    if letters < 0.85 * len(nonspace):
        return False
    tokens = p.split()
    codey = sum(1 for t in tokens if CODE_CHARS.search(t))
    if codey > 0.05 * len(tokens) or not re.search(r"[.!?。．！？۔]", p):
        return False
    if lang in SCRIPT:
        return letters_in(p, SCRIPT[lang]) >= 0.5
    words = re.findall(r"\w+", p)
    if len(words) < 15:
        return False
    en = len(EN_WORDS.findall(p))
    if lang == "en":
        return en >= 3
    return en <= 1 and letters_in(p, ("LATIN",)) >= 0.9


def lang_set(by_source, outdir, per_lang=1000, min_chars=120):
    paras = {}
    seen = set()
    for source in ("manpages", "debian-docs"):
        for d in by_source.get(source, []):
            lang = d["lang"]
            for i, p in enumerate(re.split(r"\n\s*\n", d["text"])):
                p = " ".join(p.split())
                if len(p) < min_chars or p in seen or not clean_paragraph(p, lang):
                    continue
                seen.add(p)
                paras.setdefault(lang, []).append(
                    {"id": f"{d['id']}#{i}", "text": p, "lang": lang, "source": source, "package": d["package"]}
                )
    os.makedirs(outdir, exist_ok=True)
    made = {}
    for lang, ps in sorted(paras.items()):
        ps.sort(key=lambda d: h(d["id"]))
        ps = ps[:per_lang]
        if len(ps) < 200:
            continue
        write(os.path.join(outdir, f"{lang}.jsonl"), ps)
        made[lang] = len(ps)
    return made


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    mode, src, out = sys.argv[1], sys.argv[2], sys.argv[3]
    by_source = load(src, bench_only() if mode in ("fixture", "demo") else ())
    if mode in ("fixture", "demo"):
        docs = select(by_source, FIXTURE if mode == "fixture" else DEMO)
        size = write(out, docs)
        print(f"{out}: {len(docs)} documents, {size / 1e6:.2f} MB\n{summary(docs)}")
    elif mode == "full":
        n, size, kept = full(by_source, out, float(sys.argv[4]))
        print(f"{out}: {n} documents, {size / 1e6:.1f} MB\n{summary(kept)}")
        if size < float(sys.argv[4]) * 1e6:
            print(f"note: every extracted document is in; add sources to sources.txt for more than {size / 1e6:.0f} MB")
    elif mode == "lang":
        made = lang_set(by_source, out)
        print(f"{out}: {len(made)} languages: " + ", ".join(f"{k}={v}" for k, v in made.items()))
    else:
        sys.exit(f"unknown mode {mode!r}\n{__doc__}")


if __name__ == "__main__":
    main()
