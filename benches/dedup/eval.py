"""Scores clusterings against the exact Jaccard truth.

usage: eval.py TRUTH.tsv NAME=CLUSTERS.tsv ...
A pair is a positive when its word-5-gram Jaccard is >= 0.8 and a negative when it is < 0.5
(every pair missing from TRUTH.tsv is below 0.5). Pairs in [0.5, 0.8) are the S-curve's
transition zone and count on neither side; `strict_precision` also counts them as false
positives. Predicted pairs: documents in the same cluster.
"""
import itertools, json, sys
from collections import defaultdict

truth = {}
with open(sys.argv[1]) as f:
    for line in f:
        a, b, j = line.rstrip("\n").split("\t")
        truth[(min(a, b), max(a, b))] = float(j)
pos = {p for p, j in truth.items() if j >= 0.8}
for arg in sys.argv[2:]:
    name, path = arg.split("=", 1)
    groups = defaultdict(list)
    with open(path) as f:
        for line in f:
            i, c = line.rstrip("\n").split("\t")
            groups[c].append(i)
    pred = set()
    for g in groups.values():
        if len(g) > 1:
            for a, b in itertools.combinations(sorted(g), 2):
                pred.add((a, b))
    tp = len(pred & pos)
    fp = sum(1 for p in pred if truth.get(p, 0.0) < 0.5)
    zone = sum(1 for p in pred if 0.5 <= truth.get(p, 0.0) < 0.8)
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / len(pos) if pos else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    print(json.dumps({"tool": name, "positives": len(pos), "predicted": len(pred), "tp": tp, "fp": fp,
                      "zone": zone, "precision": round(prec, 4), "recall": round(rec, 4), "f1": round(f1, 4),
                      "strict_precision": round(tp / len(pred), 4) if pred else 0.0}))
