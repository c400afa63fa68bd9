#!/usr/bin/env bash
# Packed against unpacked sft, in one run: SmolLM2-135M-Instruct (its GGUF, imported; its own
# ChatML template) on the chatterbot conversations of tests/data/sft/chatterbot_en.jsonl (the
# train split, 156 conversations), tokenized twice at the same seq_len, once one conversation a
# row and once with --pack, then STEPS steps of each from the same weights and seed, BATCH rows
# a step unpacked and PACKED_BATCH packed (give PACKED_BATCH about BATCH x the conversations per
# packed row to compare steps of about as many real tokens). Prints per layout: rows, real tokens per second (median over the steps after the
# first; padding not counted), the first step's loss, and the padding share of
# its micro-batches (the slots a right-padded micro-batch holds that are padding, as
# the trainer pads: the mean over 200 seeded shuffles of the split's rows, computed from the
# shards). CPU, fp32.
#
# Usage: benches/sft/run.sh [STEPS] [BATCH] [PACKED_BATCH]   (defaults 4, 2, BATCH; THREADS=2,
# SEQ_LEN=512)
# Needs: scripts/setup.sh --test (the .venv with pyarrow, the SmolLM2 GGUF) and a built quern
# (target/debug/quern, or QUERN=path).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
STEPS=${1:-4}
BATCH=${2:-2}
PACKED_BATCH=${3:-$BATCH}
THREADS=${THREADS:-2}
SEQ_LEN=${SEQ_LEN:-512}
QUERN=${QUERN:-target/debug/quern}
PY=${QUERN_PYTHON:-.venv/bin/python}
GGUF=${QUERN_CACHE:-$HOME/.cache/quern}/models/smollm2-135m-instruct.Q4_1.gguf
OUT=bench-data/sft
mkdir -p "$OUT"
[ -f "$OUT/smollm2/model.json" ] || "$QUERN" import "$GGUF" --out "$OUT/smollm2"
export OMP_NUM_THREADS=$THREADS
for layout in plain packed; do
    flag=""; mb=$BATCH
    [ "$layout" = packed ] && flag="--pack" && mb=$PACKED_BATCH
    "$QUERN" tokenize --objective sft --corpus tests/data/sft/chatterbot_en.jsonl \
        --tokenizer "$OUT/smollm2/tokenizer.json" --jinja-template "$OUT/smollm2" \
        --seq-len "$SEQ_LEN" $flag --out "$OUT/tok-$layout" --force --json > "$OUT/tokenize-$layout.json"
    cat > "$OUT/$layout.toml" <<TOML
out_dir = "run-$layout"
[data]
train = "tok-$layout/train"
[init]
from = "smollm2"
[optim]
lr = 3e-5
warmup_steps = 1
[train]
objective = "sft"
micro_batch = $mb
max_steps = $STEPS
eval_every = 0
device = "cpu"
seed = 1234
[checkpoint]
every = 0
keep = 1
TOML
    "$QUERN" train "$OUT/$layout.toml" --force --quiet --json > "$OUT/report-$layout.json"
done
"$PY" - "$OUT" "$BATCH" "$PACKED_BATCH" <<'PYEOF'
import json, os, random, statistics, sys
import pyarrow.parquet as pq
out = sys.argv[1]
batches = {"plain": int(sys.argv[2]), "packed": int(sys.argv[3])}
print(f"{'layout':<8} {'rows':>5} {'convs':>5} {'batch':>5} {'tokens/step':>11} {'tokens/s':>9} {'loss@1':>7} {'padding':>8}")
res = {}
for layout in ["plain", "packed"]:
    d = f"{out}/tok-{layout}/train"
    meta = json.load(open(f"{d}/meta.json"))
    lens = []
    for s in meta["shards"]:
        lens += [len(x) for x in pq.read_table(os.path.join(d, s["file"])).column("input_ids").to_pylist()]
    batch = batches[layout]
    rng = random.Random(0)
    real = slots = 0
    for _ in range(200):
        order = lens[:]
        rng.shuffle(order)
        for i in range(0, len(order) - batch + 1, batch):
            mb = order[i:i + batch]
            real += sum(l - 1 for l in mb)
            slots += len(mb) * (max(mb) - 1)
    r = json.load(open(f"{out}/report-{layout}.json"))
    steps = r["losses"]
    tps = statistics.median(s["tokens_per_s"] for s in steps[1:]) if len(steps) > 1 else steps[0]["tokens_per_s"]
    res[layout] = tps
    per_step = steps[-1]["tokens"] / len(steps)
    print(f"{layout:<8} {meta['rows']:>5} {meta['documents']:>5} {batch:>5} {per_step:>11.0f} {tps:>9.1f} "
          f"{steps[0]['loss']:>7.3f} {1 - real / slots:>8.1%}")
print(f"packed / plain tokens/s: {res['packed'] / res['plain']:.2f}x")
PYEOF
