"""Regenerates the tables quern's word tokenizer and filters read (filters/data/).

quern approximates the word splitting datatrove 0.10 uses (spaCy's blank English tokenizer
and sentencizer); the rules are quern's own Rust code, these tables are their data:

- spacy_en_specials.tsv: spaCy's English tokenizer exceptions, `key<TAB>piece piece ...`;
- spacy_en_classes.tsv: spaCy's character classes (ALPHA, ALPHA_LOWER, ALPHA_UPPER, icons)
  rewritten in Rust regex syntax;
- punctuation.tsv: datatrove's PUNCTUATION and TERMINAL_PUNCTUATION sets and the
  sentencizer's punctuation characters, as hex code points.

spaCy is MIT-licensed (Explosion AI), datatrove Apache-2.0 (Hugging Face).
Run: `.peers/bin/python benches/filters/dump_spacy_specials.py filters/data`.
"""
import os
import re
import sys

import spacy
from spacy.lang import char_classes as cc
from spacy.pipeline.sentencizer import Sentencizer
from datatrove.utils.text import PUNCTUATION, TERMINAL_PUNCTUATION

out_dir = sys.argv[1]
nlp = spacy.blank("en")
tok = nlp.tokenizer
lines = []
for key in sorted(tok.rules):
    if any(c.isspace() for c in key):
        continue  # whitespace specials: datatrove drops whitespace tokens anyway
    pieces = [t.text for t in tok(key)]
    assert "".join(pieces) == key, (key, pieces)
    lines.append(key + "\t" + " ".join(pieces))
with open(os.path.join(out_dir, "spacy_en_specials.tsv"), "w") as f:
    f.write("\n".join(lines) + "\n")


def rust_class(body: str) -> str:
    body = re.sub(r"\\u([0-9A-Fa-f]{4})", lambda m: "\\u{" + m.group(1) + "}", body)
    body = re.sub(r"\\U([0-9A-Fa-f]{8})", lambda m: "\\u{" + m.group(1) + "}", body)
    return body


icons = cc.LIST_ICONS[0]
assert icons.startswith("[") and icons.endswith("]")
with open(os.path.join(out_dir, "spacy_en_classes.tsv"), "w") as f:
    f.write("ALPHA\t" + rust_class(cc.ALPHA) + "\n")
    f.write("ALPHA_LOWER\t" + rust_class(cc.ALPHA_LOWER) + "\n")
    f.write("ALPHA_UPPER\t" + rust_class(cc.ALPHA_UPPER) + "\n")
    f.write("ICONS\t" + rust_class(icons[1:-1]) + "\n")


def hexes(chars) -> str:
    return " ".join("%x" % ord(c) for c in sorted(set(chars)))


with open(os.path.join(out_dir, "punctuation.tsv"), "w") as f:
    f.write("PUNCTUATION\t" + hexes(PUNCTUATION) + "\n")
    f.write("TERMINAL\t" + hexes(TERMINAL_PUNCTUATION) + "\n")
    f.write("SENTENCIZER\t" + hexes(Sentencizer.default_punct_chars) + "\n")
