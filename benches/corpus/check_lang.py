#!/usr/bin/env python3
"""Checks the labels of the language-ID test set against an independent classifier.

Why: the set's labels come from the language a translation declares; translations
keep untranslated English and code, which assemble.py tries to leave out. This
measures how well that worked: the share of paragraphs per language on which
py3langid (a re-packaging of langid.py, from PyPI) agrees with the label. Run by
check_lang.sh, which installs py3langid into .peers/.

Usage: check_lang.py DIR   (DIR holds <lang>.jsonl, as made by make_corpus.sh)
"""
import collections
import glob
import json
import os
import sys

import py3langid

SAME = {"no": "nb"}  # langid names Norwegian Bokmål "no"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    total = agree = 0
    print("| language | paragraphs | py3langid agrees | most common other answers |")
    print("|---|---:|---:|---|")
    for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.jsonl"))):
        want = os.path.basename(path)[: -len(".jsonl")]
        with open(path, encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f]
        got = [SAME.get(c, c) for c in (py3langid.classify(t)[0] for t in texts)]
        ok = sum(g == want for g in got)
        other = collections.Counter(g for g in got if g != want).most_common(2)
        print(f"| {want} | {len(texts)} | {100 * ok / len(texts):.1f}% | "
              + ", ".join(f"{k} ({v})" for k, v in other) + " |")
        total += len(texts)
        agree += ok
    if not total:
        sys.exit(f"check_lang.py: no <lang>.jsonl in {sys.argv[1]}: run benches/corpus/make_corpus.sh")
    print(f"\noverall: {agree}/{total} = {100 * agree / total:.1f}%")


if __name__ == "__main__":
    main()
