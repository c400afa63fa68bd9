"""Builds a dedup benchmark corpus from real text with planted near-duplicates.

Text: sentences of CPython's standard library documentation (pydoc_data.topics) and the
docstrings of the standard library's modules (read with `ast`, nothing imported); all of it
is under the PSF licence and ships with every Python. Each document is 4-10 random
sentences; a fraction of documents are copies of an earlier document with a fraction of
its words replaced, so that their word-5-gram Jaccard spreads over 0.3-1.0.

usage: make_corpus.py OUT.jsonl N_DOCS [--dup-rate 0.1] [--seed 1]
"""
import argparse, ast, json, os, random, re, sys, sysconfig
import pydoc_data.topics as topics


def sentences():
    texts = list(topics.topics.values())
    stdlib = sysconfig.get_paths()["stdlib"]
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = [d for d in dirs if d not in ("test", "tests", "site-packages", "idle_test")]
        for f in files:
            if f.endswith(".py"):
                try:
                    tree = ast.parse(open(os.path.join(root, f), encoding="utf-8").read())
                except Exception:
                    continue
                for node in ast.walk(tree):
                    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                        d = ast.get_docstring(node)
                        if d:
                            texts.append(d)
    seen, out = set(), []
    for t in texts:
        for s in re.split(r"(?<=[.!?])\s+", " ".join(t.split())):
            w = s.split()
            if 6 <= len(w) <= 40 and s not in seen:
                seen.add(s)
                out.append(s)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("n", type=int)
    ap.add_argument("--dup-rate", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    pool = sentences()
    vocab = [w for s in pool[:20000] for w in s.split()]
    print(f"sentence pool: {len(pool)}", file=sys.stderr)
    recent = []
    with open(a.out, "w") as f:
        for i in range(a.n):
            if recent and rng.random() < a.dup_rate:
                src = recent[rng.randrange(len(recent))]
                words = src.split()
                frac = rng.choice([0.0, 0.0, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12])
                for _ in range(int(len(words) * frac + 0.5)):
                    words[rng.randrange(len(words))] = vocab[rng.randrange(len(vocab))]
                text = " ".join(words)
            else:
                text = " ".join(pool[rng.randrange(len(pool))] for _ in range(rng.randint(4, 10)))
            recent.append(text)
            if len(recent) > 5000:
                recent[rng.randrange(5000)] = recent.pop()
            f.write(json.dumps({"id": f"g{i:08d}", "text": text}) + "\n")


main()
