#!/usr/bin/env bash
# GPU comparison (for a session with a device): GPT-2 124M (12 layers, 12 heads, width 768,
# seq 1024, vocab 50304, no biases, tied embeddings), batch 16, bf16, quern vs PyTorch eager
# and torch.compile. About 2 minutes on an H100/H200 after the release build.
exec env DEVICE=cuda BF16=1 MODES="${MODES:-eager,compile}" \
  MODEL_ARGS="--layers 12 --heads 12 --dim 768 --seq 1024 --vocab 50304 --batch 16" \
  "$(dirname "${BASH_SOURCE[0]}")/compare.sh"
