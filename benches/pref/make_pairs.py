"""Preference pairs from real human judgments (BENCHMARKS.md, "pref").

Usage: make_pairs.py MOVIES.jsonl OUT_DIR N_TRAIN N_HELDOUT SEED

MOVIES.jsonl is benches/cls/prepare.py's output: the movie-review snippets of vaderSentiment
3.3.2, each labelled `pos` or `neg` by the mean of its human sentiment ratings, with a seeded
train/val/test split. No public preference pairs ship in a package (../shared/DATA.md), so
the pairs are derived from those ratings: the prompt asks for a positive review, the chosen
completion is a snippet people rated positive and the rejected one a snippet they rated
negative. Training pairs come from the `train` snippets, held-out pairs from the `test`
snippets, so no snippet of a held-out pair was seen in training. Writes train.jsonl and
heldout.jsonl with `prompt`, `chosen`, `rejected`.
"""
import json
import random
import sys

movies, out, n_train, n_held, seed = sys.argv[1:6]
n_train, n_held, seed = int(n_train), int(n_held), int(seed)
rows = [json.loads(l) for l in open(movies) if l.strip()]
PROMPT = "Write one sentence of a positive movie review.\n"


def pairs(split, n, rng):
    pos = [r["text"] for r in rows if r["split"] == split and r["label"] == "pos"]
    neg = [r["text"] for r in rows if r["split"] == split and r["label"] == "neg"]
    rng.shuffle(pos)
    rng.shuffle(neg)
    if min(len(pos), len(neg)) < n:
        sys.exit(f"{split}: only {len(pos)} positive and {len(neg)} negative snippets for {n} pairs")
    return [{"id": f"{split}-{i}", "prompt": PROMPT, "chosen": pos[i], "rejected": neg[i]} for i in range(n)]


rng = random.Random(seed)
for name, split, n in [("train", "train", n_train), ("heldout", "test", n_held)]:
    with open(f"{out}/{name}.jsonl", "w") as f:
        for p in pairs(split, n, rng):
            f.write(json.dumps(p) + "\n")
