#!/usr/bin/env bash
# Fetches the real web pages the WARC/HTML tests and benches/web use: the sdist of
# newspaper4k 0.9.6 from PyPI (`pip download --no-binary :all:`), checked against its sha256,
# and its tests/data/ (30 real news pages in tests/data/html, gold texts for 23 of them in
# tests/data/txt, metadata in tests/data/metadata; MIT licence, kept with the pages) unpacked
# into ${QUERN_CACHE:-$HOME/.cache/quern}/newspaper4k-0.9.6/. Written under a temporary name
# and renamed, so an interrupted run leaves nothing half-written. Idempotent: a second run
# only checks the sdist's sha256. Prints the data directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE=${QUERN_CACHE:-$HOME/.cache/quern}
SDISTS=$CACHE/sdists
OUT=$CACHE/newspaper4k-0.9.6
mkdir -p "$SDISTS"
if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=${PYTHON:-python3}; fi

SDIST=newspaper4k-0.9.6.tar.gz
SDIST_SHA=a3f2f0e017dddb6f1019ee77aaa8980e13e6ecea0b949abc7167aae4770d2d0e

sha256() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum -- "$1" | cut -d' ' -f1
  else shasum -a 256 -- "$1" | cut -d' ' -f1; fi
}

TMPS=()
cleanup() { ((${#TMPS[@]})) && rm -rf -- "${TMPS[@]}"; return 0; }
trap cleanup EXIT

if [[ ! -f "$SDISTS/$SDIST" || "$(sha256 "$SDISTS/$SDIST")" != "$SDIST_SHA" ]]; then
  echo "fetch_web_data: downloading newspaper4k==0.9.6 (sdist)"
  tmp=$(mktemp -d "$SDISTS/.download.XXXXXX"); TMPS+=("$tmp")
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
    -d "$tmp" newspaper4k==0.9.6
  got=$(sha256 "$tmp/$SDIST")
  if [[ "$got" != "$SDIST_SHA" ]]; then
    echo "fetch_web_data: $SDIST has sha256 $got, expected $SDIST_SHA; not using it" >&2
    exit 1
  fi
  mv -f "$tmp/$SDIST" "$SDISTS/$SDIST"
  rm -rf "$OUT"
fi

if [[ ! -f "$OUT/.complete" ]]; then
  echo "fetch_web_data: unpacking $OUT"
  work=$(mktemp -d "$CACHE/.newspaper4k.XXXXXX"); TMPS+=("$work")
  tar -xzf "$SDISTS/$SDIST" -C "$work" newspaper4k-0.9.6/tests/data newspaper4k-0.9.6/LICENSE
  mkdir -p "$work/out"
  mv "$work/newspaper4k-0.9.6/tests" "$work/newspaper4k-0.9.6/LICENSE" "$work/out/"
  n=$(ls "$work/out/tests/data/html" | wc -l)
  if (( n != 30 )); then
    echo "fetch_web_data: expected 30 pages in tests/data/html, found $n" >&2
    exit 1
  fi
  touch "$work/out/.complete"
  if [[ -e "$OUT" ]]; then mv "$OUT" "$work/old"; fi
  mv "$work/out" "$OUT"
fi
echo "$OUT/tests/data"
