#!/usr/bin/env bash
# Side by side: fine-tune all-MiniLM-L6-v2 for sentiment on the movie-review snippets of the
# vaderSentiment 3.3.2 sdist (label = mean human score > 0; a fixed seeded split: 1,000 test,
# 500 val, 9,105 train) with quern and with Hugging Face `Trainer`, same model, data, seed,
# steps, batch, sequence length and schedule (AdamW, linear warmup then linear decay to 0,
# weight decay 0.01 on every matrix and embedding, clip 1.0). Prints the test accuracy and
# macro-F1 of each and the ratio of their mean step times. CPU only.
#
# Usage: benches/cls/run.sh [STEPS] [BATCH]      (defaults 100, 16; THREADS=2, SEQ_LEN=64, FUSED=off)
# Needs: scripts/setup.sh --test (the .venv with torch and transformers, the MiniLM model) and a
# built quern (target/debug/quern, or QUERN=path).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
STEPS=${1:-100}
BATCH=${2:-16}
THREADS=${THREADS:-2}
SEQ_LEN=${SEQ_LEN:-64}
SEED=${SEED:-1234}
LR=${LR:-5e-5}
# FUSED=on: libtorch's fused AdamW on both sides (quern `optim.fused = "on"`, Trainer
# `optim="adamw_torch_fused"`); off: each side's per-tensor update (the CPU defaults).
FUSED=${FUSED:-off}
WARMUP=${WARMUP:-10}
QUERN=${QUERN:-target/debug/quern}
PY=${QUERN_PYTHON:-.venv/bin/python}
MODEL=${QUERN_CACHE:-$HOME/.cache/quern}/models/all-minilm-l6-v2
OUT=bench-data/cls
mkdir -p "$OUT" .peers/vader
if ! ls .peers/vader/vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz >/dev/null 2>&1; then
    "$PY" -m pip download --no-binary :all: --no-deps vaderSentiment==3.3.2 -d .peers/vader
    tar xzf .peers/vader/vaderSentiment-3.3.2.tar.gz -C .peers/vader
fi
"$PY" benches/cls/prepare.py .peers/vader "$OUT/movies.jsonl"
"$QUERN" tokenize --objective cls --corpus "$OUT/movies.jsonl" --tokenizer "$MODEL/tokenizer.json" \
    --seq-len "$SEQ_LEN" --add-bos --out "$OUT/tok" --force --json > "$OUT/tokenize.json"
cat > "$OUT/run.toml" <<TOML
out_dir = "quern-run"
[data]
train = "tok/train"
[init]
from = "$MODEL"
[model]
dropout = 0.1
[optim]
lr = $LR
min_lr = 0.0
warmup_steps = $WARMUP
decay = "linear"
weight_decay = 0.01
decay_embeddings = true
beta1 = 0.9
beta2 = 0.999
eps = 1e-8
grad_clip = 1.0
fused = "$FUSED"
[train]
objective = "cls"
micro_batch = $BATCH
max_steps = $STEPS
seed = $SEED
device = "cpu"
[cls]
pooling = "first"
pooler = true
[checkpoint]
every = 0
keep = 1
TOML
export OMP_NUM_THREADS=$THREADS
"$QUERN" train "$OUT/run.toml" --force
"$QUERN" eval cls --model "$OUT/quern-run" --data "$OUT/tok/test" --device cpu --threads "$THREADS" \
    --batch-size 64 --json > "$OUT/quern-eval.json"
"$PY" benches/cls/hf_trainer.py "$MODEL" "$OUT/movies.jsonl" "$OUT/hf.json" --steps "$STEPS" \
    --batch "$BATCH" --seq-len "$SEQ_LEN" --lr "$LR" --warmup "$WARMUP" --seed "$SEED" --threads "$THREADS" \
    --optim "$([[ $FUSED == on ]] && echo adamw_torch_fused || echo adamw_torch)"
"$PY" - "$OUT" <<'PYEOF'
import json, sys
out = sys.argv[1]
q = json.load(open(f"{out}/quern-eval.json"))["result"]
r = json.load(open(f"{out}/quern-run/report.json"))
hf = json.load(open(f"{out}/hf.json"))
# quern's step time from its metrics: tokens per step / tokens per second.
prev, times = 0, []
for s in r["losses"]:
    times.append((s["tokens"] - prev) / s["tokens_per_s"])
    prev = s["tokens"]
qstep = sum(times) / len(times)
ql, hl = [s["loss"] for s in r["losses"]], hf["losses"]
print(f"test rows {q['rows']} (hf {hf['test_rows']}), steps {len(ql)}")
print(f"quern:       accuracy {q['report']['accuracy']:.4f}  macro-F1 {q['report']['macro_f1']:.4f}  "
      f"loss first/last 10 {sum(ql[:10])/10:.4f} -> {sum(ql[-10:])/10:.4f}  step {qstep:.3f} s")
print(f"HF Trainer:  accuracy {hf['accuracy']:.4f}  macro-F1 {hf['macro_f1']:.4f}  "
      f"loss first/last 10 {sum(hl[:10])/10:.4f} -> {sum(hl[-10:])/10:.4f}  step {hf['step_s']:.3f} s")
print(f"step time quern / HF: {qstep / hf['step_s']:.2f}")
PYEOF
