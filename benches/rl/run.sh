#!/usr/bin/env bash
# `quern rl` (GRPO) against TRL's GRPOTrainer, side by side in one run, on CPU: the same
# SmolLM2-135M-Instruct weights (the GGUF of scripts/fetch_models.sh; TRL loads quern's
# Hugging Face export of it), the same GSM8K prompts (the first 8 of tests/data/gsm8k), the
# same settings: 2 prompts x 4 samples per step, 64 new tokens at most (or MAX_NEW_TOKENS), temperature 1,
# exact-match reward, beta 0, lr 1e-6, fp32, the same number of torch threads.
#   benches/rl/run.sh [STEPS] [THREADS] [MAX_NEW_TOKENS]
# Prints seconds per step and generated tokens per second of each, and their ratios (the
# first step of each is left out as warm-up). With PPO=1 it also runs quern's PPO on the same
# settings (value head, GAE, one epoch) and prints its step time against quern's GRPO. With
# LORA=R both sides train LoRA adapters of rank R (alpha 2R, every block matrix) instead of
# every weight: quern's [lora], TRL with peft.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
STEPS=${1:-4}; THREADS=${2:-2}; NEW=${3:-64}
PER=2; G=4
GGUF=${QUERN_CACHE:-$HOME/.cache/quern}/models/smollm2-135m-instruct.Q4_1.gguf
OUT=bench-data/rl; rm -rf "$OUT"; mkdir -p "$OUT"
"$QUERN_PYTHON" -c "import trl, datasets" 2>/dev/null || "$QUERN_PYTHON" -m pip install -q \
  torch==2.11.0 transformers==5.25.0 accelerate==1.16.0 trl==1.16.0 datasets
cargo test --workspace --all-targets --no-run   # the one build every check uses (docs/DEVELOPING.md)
Q=${CARGO_TARGET_DIR:-target}/debug/quern
head -n 8 tests/data/gsm8k/test-100.jsonl > "$OUT/prompts.jsonl"
"$Q" import "$GGUF" --out "$OUT/smollm2"
"$Q" export "$OUT/smollm2" --format hf --out "$OUT/smollm2-hf"
cat > "$OUT/rl.toml" <<TOML
out_dir = "run"
[init]
from = "smollm2"
[prompts]
file = "prompts.jsonl"
format = "chat"
per_step = $PER
[generation]
group_size = $G
max_new_tokens = $NEW
[[reward]]
type = "exact_match"
[train]
steps = $STEPS
device = "cpu"
micro_batch = $((PER * G))
[checkpoint]
every = 0
keep = 1
TOML
if [ "${LORA:-0}" != 0 ]; then
  printf '[lora]\nrank = %s\nalpha = %s\ntargets = ["all-linear"]\n' "$LORA" "$((2 * LORA))" >> "$OUT/rl.toml"
fi
t0=$(date +%s.%N)
OMP_NUM_THREADS=$THREADS "$Q" rl --quiet "$OUT/rl.toml"
t1=$(date +%s.%N)
if [ "${PPO:-0}" = 1 ]; then
  sed -e 's|^out_dir = "run"|out_dir = "run-ppo"|' "$OUT/rl.toml" > "$OUT/ppo.toml"
  printf '[algorithm]\ntype = "ppo"\n' >> "$OUT/ppo.toml"
  OMP_NUM_THREADS=$THREADS "$Q" rl --quiet "$OUT/ppo.toml"
fi
"$QUERN_PYTHON" benches/rl/trl_grpo.py "$OUT/smollm2-hf" "$OUT/prompts.jsonl" "$OUT/trl.json" \
  "$STEPS" "$PER" "$G" "$NEW" "$THREADS" "${LORA:-0}"
"$QUERN_PYTHON" - "$OUT" "$t0" "$t1" <<'PY'
import json, sys
out, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
q = [json.loads(l) for l in open(f"{out}/run/metrics.jsonl")]
t = json.load(open(f"{out}/trl.json"))
qs = [l["step_s"] for l in q][1:]
qtok = [l["gen_tokens"] for l in q][1:]
ts = t["step_s"][1:]
ttok = t["gen_tokens"][1:len(ts) + 1]
def rate(tok, s): return sum(tok) / sum(s)
print(f"quern rl: {sum(qs)/len(qs):.2f} s/step, {rate(qtok, qs):.1f} generated tokens/s "
      f"({sum(qtok)/len(qtok):.0f} tokens/step), whole command {t1 - t0:.1f} s")
print(f"TRL GRPOTrainer: {sum(ts)/len(ts):.2f} s/step, {rate(ttok, ts):.1f} generated tokens/s "
      f"({sum(ttok)/len(ttok):.0f} tokens/step), train() {t['wall_s']:.1f} s")
print(f"ratio (TRL time / quern time per step): {(sum(ts)/len(ts)) / (sum(qs)/len(qs)):.2f}x; "
      f"per generated token: {rate(qtok, qs) / rate(ttok, ts):.2f}x")
print("mean reward per step: quern", [round(l["reward_mean"], 3) for l in q], "TRL", t["reward"])
import os
if os.path.exists(f"{out}/run-ppo/metrics.jsonl"):
    p = [json.loads(l) for l in open(f"{out}/run-ppo/metrics.jsonl")][1:]
    ps = [l["step_s"] for l in p]
    print(f"quern rl (ppo): {sum(ps)/len(ps):.2f} s/step "
          f"(train {sum(l['train_s'] for l in p)/len(p):.2f} s, gen {sum(l['gen_s'] for l in p)/len(p):.2f} s); "
          f"grpo: train {sum(l['train_s'] for l in q[1:])/len(q[1:]):.2f} s, gen {sum(l['gen_s'] for l in q[1:])/len(q[1:]):.2f} s; "
          f"ppo / grpo step time {(sum(ps)/len(ps)) / (sum(qs)/len(qs)):.2f}x")
PY
