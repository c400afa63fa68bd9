#!/usr/bin/env bash
# Side by side with datatrove: per-filter decision parity and speed.
#
#   benches/filters/parity.sh [LIMIT]     (default 20000 documents)
#
# Installs datatrove[processing], spacy and orjson from PyPI into .peers/ (a virtualenv
# ignored by git), makes the corpus with benches/corpus/make_corpus.sh if it is missing,
# runs datatrove's four filter families and quern's on the same first LIMIT documents of
# bench-data/corpus.jsonl, and prints agreement and docs/s per core for each.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
limit="${1:-20000}"
source "$repo/scripts/env.sh"
peers="$repo/.peers"
if [ ! -x "$peers/bin/python" ]; then python3 -m venv "$peers"; fi
"$peers/bin/python" -c "import datatrove, spacy, orjson" 2>/dev/null ||
  "$peers/bin/pip" install -q "datatrove[processing]" spacy orjson
corpus="$repo/bench-data/corpus.jsonl"
[ -s "$corpus" ] || "$repo/benches/corpus/make_corpus.sh"
out="$repo/bench-data/filters"
mkdir -p "$out"
"$repo/scripts/build-release.sh"
"$repo/target/release/examples/filter_corpus" "$corpus" "$limit" "$out/quern.tsv"
"$peers/bin/python" "$here/datatrove_run.py" "$corpus" "$limit" "$out/datatrove.tsv"
"$peers/bin/python" "$here/compare.py" "$out/datatrove.tsv" "$out/quern.tsv" "$out/disagreements.tsv"
