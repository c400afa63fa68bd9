#!/usr/bin/env bash
# The cost of the data-parallel path on one GPU (issue 17): the same run.toml trained by a
# plain `quern train` and by `torchrun --no-python --nproc-per-node 1 quern train` (which
# joins an NCCL process group of one rank and all-reduces every step's gradients, counts and
# losses), one after the other on the same GPU. Prints both median tokens/s (report.json)
# and the ratio; the goal is torchrun / plain >= 0.97 (the all-reduce path costs < 3%).
#
# For a session with a CUDA device. Model: GPT-2 124M shape at seq 1024, micro-batch 16,
# bf16, 60 steps of pseudo-random bytes; about 2 minutes on an H100 after the release build.
#
# Environment: STEPS (60), MICRO (16), PROFILE (release, the default, or dev), NO_BUILD=1 to
# reuse the binaries already built.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
source scripts/env.sh
STEPS=${STEPS:-60}
MICRO=${MICRO:-16}
PROFILE=${PROFILE:-release}
if [[ $PROFILE == release ]]; then
  [[ -n ${NO_BUILD:-} ]] || scripts/build-release.sh
  bin="$root/target/release"
else
  [[ -n ${NO_BUILD:-} ]] || cargo build -q --workspace --bins --examples
  bin="$root/target/debug"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin/examples/byte_split" "$work/tokens" 1024 64
cat > "$work/run.toml" <<TOML
out_dir = "run"
[data]
train = "tokens"
[model]
layers = 12
heads = 12
dim = 768
dropout = 0.0
[optim]
lr = 3e-4
warmup_steps = 10
[train]
device = "cuda"
precision = "bf16"
micro_batch = $MICRO
max_steps = $STEPS
eval_every = 0
[checkpoint]
every = 0
keep = 1
TOML
tps() { .venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["tokens_per_s"])' "$1"; }
echo "plain quern train ($STEPS steps)"
"$bin/quern" train --quiet --force "$work/run.toml" >/dev/null
plain=$(tps "$work/run/report.json")
echo "torchrun --no-python --nproc-per-node 1 quern train ($STEPS steps)"
.venv/bin/torchrun --no-python --nproc-per-node 1 --master-addr 127.0.0.1 --master-port 29517 \
  "$bin/quern" train --quiet --force "$work/run.toml" >/dev/null
dist=$(tps "$work/run/report.json")
nvidia-smi --query-gpu=name --format=csv,noheader || true
.venv/bin/python - "$plain" "$dist" <<'PY'
import sys
plain, dist = map(float, sys.argv[1:])
print(f"plain {plain:.0f} tokens/s, torchrun 1 rank (NCCL) {dist:.0f} tokens/s: ratio {dist / plain:.4f} "
      f"({'within' if dist / plain >= 0.97 else 'OUTSIDE'} the 3% goal)")
PY
