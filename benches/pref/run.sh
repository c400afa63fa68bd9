#!/usr/bin/env bash
# Preference training side by side (BENCHMARKS.md, "pref"): `quern train` with objective dpo
# and rm against TRL's DPOTrainer and RewardTrainer, on the same model (SmolLM2-135M-Instruct,
# the GGUF of scripts/fetch_models.sh; TRL loads quern's Hugging Face export of the same
# weights), the same pairs and the same settings, in one run, on CPU.
#
#   benches/pref/run.sh [STEPS] [BATCH] [THREADS]      (defaults 20 4 2)
#
# Pairs: benches/pref/make_pairs.py derives them from real human sentiment ratings (the
# vaderSentiment movie snippets that benches/cls uses): prompt "Write one sentence of a positive
# movie review.", chosen a snippet rated positive, rejected one rated negative; N_TRAIN (256)
# training pairs from the train snippets, N_HELD (128) held-out pairs from the test snippets.
# Both sides: plain prompt and completions (no chat template), completions ended by eos,
# 128 tokens at most, AdamW at a constant LR (default 1e-6; weight decay 0; betas 0.9/0.999;
# libtorch's fused update, Trainer's default optimizer `adamw_torch_fused`), seed 1234, fp32,
# full weights; DPO sigmoid with beta 0.1 against the frozen starting model; RM a fresh scalar
# head without centering. Prints the first loss, the mean step time (the first step left out
# as warm-up) and the held-out pair accuracy after training of each.
# Needs scripts/setup.sh --test, a built quern (target/debug/quern, or QUERN=path), and TRL
# in .venv (installed here when missing, as benches/rl does).
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${1:-20}; BATCH=${2:-4}; THREADS=${3:-2}
LR=${LR:-1e-6}; N_TRAIN=${N_TRAIN:-256}; N_HELD=${N_HELD:-128}
QUERN=${QUERN:-target/debug/quern}
PY=${QUERN_PYTHON:-.venv/bin/python}
GGUF=${QUERN_CACHE:-$HOME/.cache/quern}/models/smollm2-135m-instruct.Q4_1.gguf
OUT=bench-data/pref
mkdir -p "$OUT" .peers/vader
"$PY" -c "import trl, datasets" 2>/dev/null || "$PY" -m pip install -q \
  torch==2.11.0 transformers==5.25.0 accelerate==1.16.0 trl==1.16.0 datasets
if ! ls .peers/vader/vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz >/dev/null 2>&1; then
    "$PY" -m pip download --no-binary :all: --no-deps vaderSentiment==3.3.2 -d .peers/vader
    tar xzf .peers/vader/vaderSentiment-3.3.2.tar.gz -C .peers/vader
fi
"$PY" benches/cls/prepare.py .peers/vader "$OUT/movies.jsonl"
"$PY" benches/pref/make_pairs.py "$OUT/movies.jsonl" "$OUT" "$N_TRAIN" "$N_HELD" 1234
[ -f "$OUT/smollm2/model.json" ] || "$QUERN" import "$GGUF" --out "$OUT/smollm2" >/dev/null
[ -f "$OUT/smollm2-hf/config.json" ] || "$QUERN" export "$OUT/smollm2" --format hf --out "$OUT/smollm2-hf" >/dev/null
export OMP_NUM_THREADS=$THREADS
for obj in dpo rm; do
    for part in train heldout; do
        "$QUERN" tokenize --objective "$obj" --corpus "$OUT/$part.jsonl" \
            --tokenizer "$OUT/smollm2/tokenizer.json" --seq-len 128 \
            --out "$OUT/tok-$obj-$part" --force --json > "$OUT/tokenize-$obj-$part.json"
    done
    cat > "$OUT/$obj.toml" <<TOML
out_dir = "run-$obj"
[data]
train = "tok-$obj-train/train"
val = "tok-$obj-heldout/train"
[init]
from = "smollm2"
[optim]
lr = $LR
warmup_steps = 0
decay = "constant"
weight_decay = 0.0
beta2 = 0.999
fused = "on"
[train]
objective = "$obj"
micro_batch = $BATCH
max_steps = $STEPS
eval_every = 0
eval_batches = $(( (N_HELD + BATCH - 1) / BATCH ))
device = "cpu"
seed = 1234
[checkpoint]
every = 0
keep = 1
TOML
    [ "$obj" = dpo ] && printf '[dpo]\nbeta = 0.1\nloss = "sigmoid"\n' >> "$OUT/$obj.toml"
    "$QUERN" train "$OUT/$obj.toml" --force --quiet --json > "$OUT/report-$obj.json"
    "$PY" benches/pref/trl_pref.py "$obj" "$OUT/smollm2-hf" "$OUT/train.jsonl" "$OUT/heldout.jsonl" \
        "$OUT/trl-$obj.json" "$STEPS" "$BATCH" "$LR" "$THREADS" > /dev/null
done
"$PY" - "$OUT" <<'PYEOF'
import json, sys
out = sys.argv[1]
print(f"{'':<6} {'tool':<6} {'first loss':>10} {'mean step s':>11} {'held-out pair accuracy':>22}")
for obj in ["dpo", "rm"]:
    q = [json.loads(l) for l in open(f"{out}/run-{obj}/metrics.jsonl")]
    steps = [l for l in q if l.get("kind") != "eval"]
    evals = [l for l in q if l.get("kind") == "eval"]
    prev, times = 0, []
    for s in steps:
        times.append((s["tokens"] - prev) / s["tokens_per_s"])
        prev = s["tokens"]
    qs = sum(times[1:]) / max(1, len(times) - 1)
    t = json.load(open(f"{out}/trl-{obj}.json"))
    ts = sum(t["step_s"][1:]) / max(1, len(t["step_s"]) - 1)
    print(f"{obj:<6} {'quern':<6} {steps[0]['loss']:>10.4f} {qs:>11.3f} {evals[-1]['pair_accuracy']:>22.4f}")
    print(f"{obj:<6} {'TRL':<6} {t['loss'][0]:>10.4f} {ts:>11.3f} {t['heldout_accuracy']:>22.4f}")
    print(f"{obj}: TRL step / quern step {ts / qs:.2f}x; held-out pairs {len(open(f'{out}/heldout.jsonl').readlines())}")
PYEOF
