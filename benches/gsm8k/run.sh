#!/usr/bin/env bash
# GSM8K exact match of SmolLM2-135M-Instruct (the GGUF scripts/fetch_models.sh fetches) on the
# 100 GSM8K test problems of tests/data/gsm8k/test-100.jsonl, 0-shot through its chat template,
# greedy, then transformers' greedy generation on the first N of the same prompts.
#   benches/gsm8k/run.sh [N] [--device cuda]
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
N=${1:-20}; shift || true
GGUF=${QUERN_CACHE:-$HOME/.cache/quern}/models/smollm2-135m-instruct.Q4_1.gguf
OUT=bench-data/gsm8k; mkdir -p "$OUT"
cargo build --bin quern --bin quern-torch
time target/debug/quern eval gen --model "$GGUF" --task tests/data/gsm8k/test-100.jsonl \
  --chat --max-tokens 256 --batch-size 25 --details "$OUT/details.jsonl" --out "$OUT/result.json" "$@"
"$QUERN_PYTHON" benches/gsm8k/hf_compare.py "$GGUF" "$OUT/details.jsonl" "$N" "$OUT/hf.jsonl"
