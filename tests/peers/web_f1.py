"""Token-level precision, recall and F1 of extracted texts against newspaper4k's gold texts
(tests/it/web.rs, benches/web/run.py).

Tokens: maximal runs of Unicode word characters, lowercased; in scripts written without
spaces (Han, Hiragana, Katakana, Thai, Lao, Myanmar, Khmer) every character is a token of
its own. Each page's score is over the bag (multiset) of tokens: overlap = sum over tokens
of min(count in extraction, count in gold); precision = overlap / extraction tokens, recall
= overlap / gold tokens, F1 their harmonic mean (0 when either is 0). A set's figures are
the means over its pages.

usage: web_f1.py GOLD_TXT_DIR EXTRACTED.json HOLDOUT.txt OUT.json
  EXTRACTED.json: {"page name": "extracted text", ...}; a gold page missing from it scores 0.
  HOLDOUT.txt: page names held out from tuning (one a line, # comments).
Writes {"pages": {name: {p, r, f1, set}}, "tuned": {p, r, f1, n}, "held_out": {...},
"all": {...}}.
"""

import json
import os
import re
import sys
from collections import Counter

NOSPACE = [
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),  # Han
    (0xF900, 0xFAFF),
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
]


def nospace(c):
    o = ord(c)
    return any(a <= o <= b for a, b in NOSPACE)


def tokens(s):
    out = []
    for m in re.finditer(r"\w+", s.lower()):
        buf = []
        for c in m.group():
            if nospace(c):
                if buf:
                    out.append("".join(buf))
                    buf = []
                out.append(c)
            else:
                buf.append(c)
        if buf:
            out.append("".join(buf))
    return out


def score(pred, gold):
    p, g = Counter(tokens(pred)), Counter(tokens(gold))
    overlap = sum((p & g).values())
    np_, ng = sum(p.values()), sum(g.values())
    prec = overlap / np_ if np_ else 0.0
    rec = overlap / ng if ng else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return prec, rec, f1


def gold_pages(gold_dir, html_dir=None):
    names = sorted(n[:-4] for n in os.listdir(gold_dir) if n.endswith(".txt"))
    if html_dir:
        names = [n for n in names if os.path.exists(os.path.join(html_dir, n + ".html"))]
    return names


def holdout(path):
    return {l.strip() for l in open(path) if l.strip() and not l.startswith("#")}


def evaluate(gold_dir, extracted, held, names):
    pages = {}
    for n in names:
        gold = open(os.path.join(gold_dir, n + ".txt"), encoding="utf-8").read()
        p, r, f = score(extracted.get(n, ""), gold)
        pages[n] = {"p": p, "r": r, "f1": f, "set": "held_out" if n in held else "tuned"}

    def mean(sel):
        v = [pages[n] for n in names if sel(n)]
        k = len(v) or 1
        return {
            "p": sum(x["p"] for x in v) / k,
            "r": sum(x["r"] for x in v) / k,
            "f1": sum(x["f1"] for x in v) / k,
            "n": len(v),
        }

    return {
        "pages": pages,
        "tuned": mean(lambda n: n not in held),
        "held_out": mean(lambda n: n in held),
        "all": mean(lambda n: True),
    }


def main():
    gold_dir, extracted_path, holdout_path, out = sys.argv[1:5]
    extracted = json.load(open(extracted_path, encoding="utf-8"))
    held = holdout(holdout_path)
    names = gold_pages(gold_dir, os.path.join(os.path.dirname(gold_dir.rstrip("/")), "html"))
    missing = held - set(names)
    assert not missing, f"held-out pages without gold: {missing}"
    json.dump(evaluate(gold_dir, extracted, held, names), open(out, "w"), indent=1)


if __name__ == "__main__":
    main()
