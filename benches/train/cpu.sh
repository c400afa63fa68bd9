#!/usr/bin/env bash
# CPU comparison (no device needed): the small config torch_ref_gpt.py documents for CPU,
# fp32, quern vs PyTorch eager. Both use libtorch's CPU kernels with the same thread count.
exec env DEVICE=cpu BF16=0 MODES="${MODES:-eager}" STEPS="${STEPS:-20}" WARMUP="${WARMUP:-5}" \
  MODEL_ARGS="--layers 2 --heads 4 --dim 128 --seq 128 --vocab 4096 --batch 8" \
  "$(dirname "${BASH_SOURCE[0]}")/compare.sh"
