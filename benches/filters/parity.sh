#!/usr/bin/env bash
# Side by side with datatrove: per-filter decision parity and speed; then language-ID
# accuracy per language and PII precision/recall (BENCHMARKS.md `## filters`).
#
#   benches/filters/parity.sh [LIMIT]     (default 20000 documents)
#
# Installs datatrove[processing], spacy and orjson from PyPI into .peers/ (a virtualenv
# ignored by git), makes the corpus with benches/corpus/make_corpus.sh if it is missing,
# runs datatrove's four filter families and quern's on the same first LIMIT documents of
# bench-data/corpus.jsonl, and prints agreement and docs/s per core for each.
#
# datatrove's side takes about an hour on a quiet 2-core machine; its decisions are kept in
# bench-data/filters/datatrove.tsv and reused when they cover LIMIT documents
# (DATATROVE_RERUN=1 runs it again). quern's binaries come from the one release build,
# scripts/build-release.sh. When another release build of the workspace is under way and
# logs to RELEASE_BUILD_LOG (default /tmp/relbuild.log, if that file exists), this waits
# until its last line starts with `done` first.
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

build_log="${RELEASE_BUILD_LOG:-/tmp/relbuild.log}"
if [ -f "$build_log" ]; then
  until tail -n 1 "$build_log" | grep -q '^done'; do
    echo "waiting for the release build logging to $build_log ..." >&2
    sleep 30
  done
fi
"$repo/scripts/build-release.sh"

echo "== machine load before the runs: $(uptime)"
"$repo/target/release/examples/filter_corpus" "$corpus" "$limit" "$out/quern.tsv" | tee "$out/quern.log"
echo "== machine load after quern: $(uptime)"
if [ "${DATATROVE_RERUN:-0}" = 1 ] || [ ! -s "$out/datatrove.tsv" ] ||
  [ "$(wc -l < "$out/datatrove.tsv")" -ne $((4 * limit)) ]; then
  "$peers/bin/python" "$here/datatrove_run.py" "$corpus" "$limit" "$out/datatrove.tsv" | tee "$out/datatrove.log"
  echo "== machine load after datatrove: $(uptime)"
else
  echo "datatrove: reusing $out/datatrove.tsv (measured earlier):"
  cat "$out/datatrove.log" 2>/dev/null || true
fi
"$peers/bin/python" "$here/compare.py" "$out/datatrove.tsv" "$out/quern.tsv" "$out/disagreements.tsv"

echo
echo "== language ID (bench-data/lang, $(uptime))"
"$repo/target/release/examples/lang_accuracy" "$repo/bench-data/lang"

echo
echo "== PII (planted into real English paragraphs of the corpus)"
"$repo/target/release/examples/pii_eval" "$corpus" 2000
