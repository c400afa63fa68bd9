#!/usr/bin/env bash
# The cost of the data-parallel path on one GPU (issue 17): the same run.toml trained by a
# plain `quern train` and by `torchrun --no-python --nproc-per-node 1 quern train` (which
# joins an NCCL process group of one rank and all-reduces every step's gradients, counts and
# losses), one after the other on the same GPU. Prints both median tokens/s (report.json)
# and the ratio; the goal is torchrun / plain >= 0.97 (the all-reduce path costs < 3%).
#
# For a session with a CUDA device. Model: GPT-2 124M shape at seq 1024, micro-batch 16,
# bf16, 60 steps of pseudo-random bytes; about 2 minutes on an H100 after the release build.
# DEVICE=cpu runs the same comparison over Gloo on a small model (2 layers, width 128, seq 128,
# fp32), both sides with OMP_NUM_THREADS=1 as torchrun sets it.
#
# Environment: DEVICE (cuda|cpu), STEPS (60), MICRO (16; 8 on cpu), ROUNDS (1: plain then
# torchrun, repeated this many times, a ratio per round), PROFILE (release, the default, or
# dev), NO_BUILD=1 to reuse the binaries already built.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
source scripts/env.sh
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-60}
ROUNDS=${ROUNDS:-1}
if [[ $DEVICE == cpu ]]; then
  MICRO=${MICRO:-8}; SEQ=128; MB=4; SHAPE=$'layers = 2\nheads = 4\ndim = 128'; PRECISION=fp32
  export OMP_NUM_THREADS=1
else
  MICRO=${MICRO:-16}; SEQ=1024; MB=64; SHAPE=$'layers = 12\nheads = 12\ndim = 768'; PRECISION=bf16
fi
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
"$bin/examples/byte_split" "$work/tokens" "$SEQ" "$MB"
cat > "$work/run.toml" <<TOML
out_dir = "run"
[data]
train = "tokens"
[model]
$SHAPE
dropout = 0.0
[optim]
lr = 3e-4
warmup_steps = 10
[train]
device = "$DEVICE"
precision = "$PRECISION"
micro_batch = $MICRO
max_steps = $STEPS
eval_every = 0
[checkpoint]
every = 0
keep = 1
TOML
tps() { .venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["tokens_per_s"])' "$1"; }
port=$((29500 + RANDOM % 1000))
for round in $(seq "$ROUNDS"); do
  "$bin/quern" train --quiet --force "$work/run.toml" >/dev/null
  plain=$(tps "$work/run/report.json")
  .venv/bin/torchrun --no-python --nproc-per-node 1 --master-addr 127.0.0.1 --master-port "$port" \
    "$bin/quern" train --quiet --force "$work/run.toml" >/dev/null
  dist=$(tps "$work/run/report.json")
  .venv/bin/python - "$plain" "$dist" "$round" "$DEVICE" <<'PY'
import sys
plain, dist = map(float, sys.argv[1:3])
print(f"round {sys.argv[3]} ({sys.argv[4]}): plain {plain:.0f} tokens/s, torchrun 1 rank {dist:.0f} tokens/s: "
      f"ratio {dist / plain:.4f} ({'within' if dist / plain >= 0.97 else 'OUTSIDE'} the 3% goal)")
PY
done
[[ $DEVICE == cpu ]] || nvidia-smi --query-gpu=name --format=csv,noheader || true
