"""Scores clusterings against the exact Jaccard truth.

usage: eval.py TRUTH.tsv NAME=CLUSTERS.tsv ...
A pair is a positive when its word-5-gram Jaccard is >= 0.8 and a negative when it is < 0.5
(every pair missing from TRUTH.tsv is below 0.5). Pairs in [0.5, 0.8) are the S-curve's
transition zone and count on neither side; `strict_precision` also counts them as false
positives. Predicted pairs: documents in the same cluster.

Then, per tool, the S-curve: the share of true pairs detected (same cluster) in each exact
Jaccard bucket from 0.5 to 1.0, next to LSH's theoretical candidate probability
1 - (1 - s^ROWS)^BANDS at the bucket's middle (14 bands x 8 rows).
"""
import itertools, json, sys
from collections import defaultdict

truth = {}
with open(sys.argv[1]) as f:
    for line in f:
        a, b, j = line.rstrip("\n").split("\t")
        truth[(min(a, b), max(a, b))] = float(j)
pos = {p for p, j in truth.items() if j >= 0.8}
BANDS, ROWS = 14, 8
EDGES = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def bucket(j):
    if j >= 1.0 - 1e-9:
        return "1.0"
    for lo, hi in zip(EDGES, EDGES[1:]):
        if lo <= j < hi:
            return f"{lo:.1f}-{hi:.1f}"
    return None


NAMES = [f"{lo:.1f}-{hi:.1f}" for lo, hi in zip(EDGES, EDGES[1:])] + ["1.0"]
in_bucket = {b: [p for p, j in truth.items() if bucket(j) == b] for b in NAMES}
mid = {b: (1.0 if b == "1.0" else (float(b[:3]) + float(b[4:])) / 2) for b in NAMES}
scurves = []
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
    scurves.append((name, {b: (sum(p in pred for p in ps), len(ps)) for b, ps in in_bucket.items()}))
print()
print("| true Jaccard | pairs | LSH theory | " + " | ".join(n for n, _ in scurves) + " |")
print("|---|---:|---:|" + "---:|" * len(scurves))
for b in NAMES:
    theory = 1 - (1 - mid[b] ** ROWS) ** BANDS
    cells = [f"{d / n:.3f}" if n else "-" for d, n in (c[b] for _, c in scurves)]
    print(f"| {b} | {len(in_bucket[b])} | {theory:.3f} | " + " | ".join(cells) + " |")
