#!/usr/bin/env bash
# Decoding speed, quern vs transformers, side by side on the same model, prompt ids and
# machine: batch 1 and 8, greedy with the KV cache, fp32 on CPU; quern also with
# QUERN_MATVEC=libtorch (libtorch's products instead of quern's decoding kernels). Also the
# GGUF import time of both, and the memory-bandwidth bound of batch-1 decoding (bytes of
# weights per token over the machine's measured read bandwidth).
#
#   benches/generate/run.sh [NEW_TOKENS]      (default 32)
#
# Prints one JSON line per measurement; BENCHMARKS.md ("generate") reports the ratios.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/env.sh
# QUERN_BIN=target/debug/quern skips the release build (the dev profile builds dependencies,
# libtorch's callers included, at opt-level 2; say which one a figure came from).
if [[ -z "${QUERN_BIN:-}" ]]; then scripts/build-release.sh >/dev/null; fi
Q=${QUERN_BIN:-target/release/quern}
PY=.venv/bin/python
N=${1:-32}
CACHE=${QUERN_CACHE:-$HOME/.cache/quern}
GGUF=$CACHE/models/smollm2-135m-instruct.Q4_1.gguf
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "# machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
# Read bandwidth: torch summing a 1 GiB fp32 tensor with every core (the best of 5).
$PY benches/generate/bandwidth.py

# Import time: quern import vs transformers' from_pretrained(gguf_file=...).
t0=$(date +%s.%N); $Q import "$GGUF" --out "$WORK/smollm2" --json >/dev/null; t1=$(date +%s.%N)
echo "{\"measure\": \"import_s\", \"tool\": \"quern\", \"value\": $(echo "$t1 - $t0" | bc)}"
$PY - "$GGUF" <<'PY'
import json, os, sys, time
os.environ["HF_HUB_OFFLINE"] = "1"; os.environ["TRANSFORMERS_VERBOSITY"] = "error"
import torch
from transformers import AutoModelForCausalLM
t = time.perf_counter()
AutoModelForCausalLM.from_pretrained(os.path.dirname(sys.argv[1]), gguf_file=os.path.basename(sys.argv[1]), torch_dtype=torch.float32)
print(json.dumps({"measure": "import_s", "tool": "transformers", "value": time.perf_counter() - t}))
PY

# A tiny Llama (2 layers, width 64), where per-token overhead dominates: saved by
# transformers, imported by quern.
$PY - "$WORK/tiny-hf" <<'PY'
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)).save_pretrained(sys.argv[1])
PY
$Q import "$WORK/tiny-hf" --out "$WORK/tiny" >/dev/null

for model in tiny smollm2; do
  for b in 1 8; do
    if [[ $model == tiny ]]; then peer=(--hf "$WORK/tiny-hf"); else peer=(--gguf "$GGUF"); fi
    gen=($Q generate --model "$WORK/$model" --bench --json --device cpu ${THREADS:+--threads $THREADS} --prompt-tokens 16 --batch-size $b --max-tokens "$N" --repeat 3)
    q=$("${gen[@]}")
    # The same with libtorch's products and attention instead of quern's decoding kernels.
    ql=$(QUERN_MATVEC=libtorch "${gen[@]}")
    h=$(${THREADS:+env OMP_NUM_THREADS=$THREADS} $PY benches/generate/hf_generate.py "${peer[@]}" --batch $b --prompt-tokens 16 --new-tokens "$N" --repeat 3)
    echo "{\"measure\": \"decode\", \"model\": \"$model\", \"batch\": $b, \"quern\": $q, \"quern_libtorch\": $ql, \"transformers\": $h}"
  done
done
