#!/usr/bin/env bash
# Side-by-side trainer speed: quern (train/examples/bench_gpt.rs, through quern's own
# trainer) against ../shared/bench/torch_ref_gpt.py (plain PyTorch) on the same model and the
# same random batch, in one run. Prints each JSON line, then quern's throughput as a ratio of
# each PyTorch mode's, and peak GPU memory (sampled with nvidia-smi) on CUDA.
#
#   benches/train/gpu.sh   GPT-2 124M, batch 16, seq 1024, bf16, on CUDA (eager and torch.compile)
#   benches/train/cpu.sh   a small GPT on CPU, fp32 (eager)
#
# Environment: DEVICE (cuda|cpu), MODEL_ARGS (shape flags shared by both), MODES
# (PyTorch modes), BF16 (1|0), STEPS, WARMUP, REF (path to torch_ref_gpt.py), PROFILE
# (release, the default, or dev: on a shared build machine a dev build avoids a second
# target profile; the compute is libtorch's either way, quern's own code is the loop around it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
source scripts/env.sh
REF=${REF:-$root/../shared/bench/torch_ref_gpt.py}
DEVICE=${DEVICE:-cuda}
BF16=${BF16:-1}
MODES=${MODES:-eager,compile}
STEPS=${STEPS:-30}
WARMUP=${WARMUP:-10}
MODEL_ARGS=${MODEL_ARGS:---layers 12 --heads 12 --dim 768 --seq 1024 --vocab 50304 --batch 16}
[[ -f "$REF" ]] || { echo "compare.sh: reference script $REF not found (set REF)" >&2; exit 1; }
PROFILE=${PROFILE:-release}
if [[ $PROFILE == release ]]; then
  [[ -n ${NO_BUILD:-} ]] || scripts/build-release.sh
  bin="$root/target/release/examples/bench_gpt"
else
  cargo build -q -p quern-train --example bench_gpt
  bin="$root/target/debug/examples/bench_gpt"
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Runs a command while sampling GPU memory; prints its stdout, records the peak in $out/$1.mem.
sampled() {
  local tag=$1; shift
  local pid=""
  if [[ $DEVICE == cuda* ]] && command -v nvidia-smi >/dev/null; then
    (while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; sleep 0.2; done) >"$out/$tag.mem" &
    pid=$!
  fi
  # Peak resident memory of the process (host side; on CPU that is all of it).
  /usr/bin/time -f "%M" -o "$out/$tag.rss" "$@"
  [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
}

ref_flags=(--device "$DEVICE" --steps "$STEPS" --warmup "$WARMUP" --modes "$MODES")
[[ $BF16 == 1 ]] || ref_flags+=(--no-bf16)
# One mode per process, so each memory sample belongs to one run.
IFS=, read -ra modes <<<"$MODES"
for mode in "${modes[@]}"; do
  ref_flags[7]=$mode
  sampled "pytorch-$mode" "$QUERN_PYTHON" "$REF" $MODEL_ARGS "${ref_flags[@]}" | tee -a "$out/results.jsonl"
done
sampled quern "$bin" $MODEL_ARGS --device "$DEVICE" --bf16 "$BF16" --steps "$STEPS" --warmup "$WARMUP" | tee -a "$out/results.jsonl"

"$QUERN_PYTHON" - "$out" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
rows = {r["impl"]: r for r in map(json.loads, open(os.path.join(out, "results.jsonl")))}
mem = {}
for f in glob.glob(os.path.join(out, "*.mem")):
    vals = [int(x) for x in open(f).read().split() if x.strip().isdigit()]
    if vals:
        mem[os.path.basename(f)[:-4]] = max(vals) / 1024
rss = {}
for f in glob.glob(os.path.join(out, "*.rss")):
    vals = [int(x) for x in open(f).read().split() if x.strip().isdigit()]
    if vals:
        rss[os.path.basename(f)[:-4]] = vals[-1] / 1024
q = rows["quern"]
print(f"\nquern: {q['tokens_per_s']:.0f} tokens/s, step {q['step_ms_median']} ms, MFU {q['mfu']}, final loss {q['final_loss']}"
      + (f", peak GPU memory {mem['quern']:.1f} GiB (nvidia-smi)" if 'quern' in mem else "")
      + (f", peak RSS {rss['quern']:.0f} MiB" if 'quern' in rss else ""))
for name, r in rows.items():
    if name == "quern":
        continue
    line = f"{name}: {r['tokens_per_s']:.0f} tokens/s, step {r['step_ms_median']} ms, MFU {r['mfu']}; quern/{name} throughput = {q['tokens_per_s'] / r['tokens_per_s']:.3f}"
    if name in mem:
        line += f", peak GPU memory {mem[name]:.1f} GiB (nvidia-smi)"
    if name in rss:
        line += f", peak RSS {rss[name]:.0f} MiB"
        if "quern" in rss:
            line += f" (quern/{name} = {rss['quern'] / rss[name]:.2f})"
    print(line)
PY
