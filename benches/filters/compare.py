"""Compares quern's and datatrove's per-document decisions (TSV from filter_corpus and
datatrove_run.py): per filter, the share of documents with the same keep/drop decision
and the same reason, and the most common disagreements.

Usage: compare.py DATATROVE.tsv QUERN.tsv [DISAGREEMENTS.tsv]
"""
import collections
import sys


def load(path):
    d = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            doc_id, flt, reason = line.rstrip("\n").split("\t")
            d[(flt, doc_id)] = reason
    return d


dt, qu = load(sys.argv[1]), load(sys.argv[2])
dis_out = open(sys.argv[3], "w", encoding="utf-8") if len(sys.argv) > 3 else None
filters = sorted({f for f, _ in dt})
print("| filter | docs | same decision | same decision and reason | datatrove drops | quern drops |")
print("|---|---:|---:|---:|---:|---:|")
classes = {}
for flt in filters:
    keys = [k for k in dt if k[0] == flt]
    same_dec = same_reason = dt_drop = qu_drop = 0
    cls = collections.Counter()
    for k in keys:
        a, b = dt[k], qu.get(k, "missing")
        dt_drop += a != "keep"
        qu_drop += b != "keep"
        if (a == "keep") == (b == "keep"):
            same_dec += 1
        if a == b:
            same_reason += 1
        else:
            cls[(a, b)] += 1
            if dis_out:
                dis_out.write(f"{flt}\t{k[1]}\t{a}\t{b}\n")
    n = len(keys)
    print(f"| {flt} | {n} | {100 * same_dec / n:.2f}% | {100 * same_reason / n:.2f}% | {dt_drop} | {qu_drop} |")
    classes[flt] = cls
print()
for flt, cls in classes.items():
    if cls:
        print(f"{flt}: disagreements (datatrove -> quern): " + ", ".join(f"{a} -> {b}: {c}" for (a, b), c in cls.most_common(8)))
