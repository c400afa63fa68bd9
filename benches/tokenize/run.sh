#!/usr/bin/env bash
# Tokenization speed, side by side on the same real corpus and the same tokenizer:
#   - Python `tokenizers` encode_batch (the peer, from PyPI, in .peers/), encode only;
#   - raw Rust `tokenizers` encode_batch / encode_batch_fast on texts already in memory
#     (the limit);
#   - quern's tokenize_corpus end to end: Parquet read, encode, pack (seq_len 1024),
#     Parquet write, manifest.
# All use every core (rayon / TOKENIZERS_PARALLELISM). Needs bench-data/corpus.jsonl
# (benches/corpus/make_corpus.sh). Prints MB/s and the ratios.
#   benches/tokenize/run.sh [--vocab N] [--train-docs N] [--batch N] [--dev]
# --dev builds with the dev profile (dependencies at opt-level 2, quern at 1) instead of
# --release, to reuse the test build on a busy machine.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
source scripts/env.sh
vocab=32000; train_docs=20000; batch=2048; profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --vocab) vocab="$2"; shift 2 ;;
    --train-docs) train_docs="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --dev) profile=dev; shift ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
corpus=bench-data/corpus.jsonl
[ -f "$corpus" ] || { echo "run.sh: $corpus is missing; run benches/corpus/make_corpus.sh" >&2; exit 1; }
work=bench-data/tokenize
mkdir -p "$work"

if [ ! -x .peers/bin/python ]; then python3 -m venv .peers; fi
.peers/bin/python -c 'import tokenizers, pyarrow' 2>/dev/null || .peers/bin/pip install -q --disable-pip-version-check tokenizers pyarrow
peer=".peers/bin/python benches/tokenize/peer.py"

[ -d "$work/docs" ] || $peer to_parquet "$corpus" "$work/docs" 8
if [ "$profile" = release ]; then
  scripts/build-release.sh
  bin=target/release/examples/tokenize_bench
else
  cargo build -q -p quern-tokenize --example tokenize_bench
  bin=target/debug/examples/tokenize_bench
fi
[ -f "$work/tokenizer.json" ] || $bin train "$work/docs" "$work/tokenizer.json" "$vocab" "$train_docs"

results="$work/results.jsonl"
: > "$results"
# The 1-minute load average before each measurement: numbers are comparable only when it is
# low (nothing else running).
load() { echo "load: $(cut -d' ' -f1 /proc/loadavg)"; }
load; $peer encode "$work/docs" "$work/tokenizer.json" "$batch" | tee -a "$results"
load; $bin limit "$work/docs" "$work/tokenizer.json" "$batch" | tee -a "$results"
load; $bin quern "$work/docs" "$work/tokenizer.json" "$work/out" 1024 | tee -a "$results"

python3 - "$results" <<'PY'
import json, sys
r = {j["what"]: j for j in map(json.loads, open(sys.argv[1]))}
mbs = {k: v["bytes"] / 1e6 / v["seconds"] for k, v in r.items()}
for k, v in mbs.items():
    print(f"{k:<24} {r[k]['bytes']/1e6:8.1f} MB  {r[k]['seconds']:8.2f} s  {v:7.2f} MB/s")
q = mbs["quern_tokenize"]
print(f"quern / python encode_batch        {q / mbs['python_encode_batch']:.2f}x")
print(f"quern / rust encode_batch          {q / mbs['rust_encode_batch']:.2f}x")
print(f"quern / rust encode_batch_fast     {q / mbs['rust_encode_batch_fast']:.2f}x")
PY
