#!/usr/bin/env bash
# Web crawls side by side (BENCHMARKS.md, `## web`): main-text extraction P/R/F1 and pages/s
# per core of quern, trafilatura and resiliparse on newspaper4k 0.9.6's real pages (gold texts
# for 23), and WARC records/s of quern, warcio and fastwarc, all on one core in one run.
#
#   benches/web/run.sh [--repeat N]      (default 10 copies / passes)
#
# quern: target/release/quern from scripts/build-release.sh, or QUERN_BIN when set. The peers
# (trafilatura with lxml_html_clean, resiliparse, fastwarc, warcio) are installed from PyPI
# into .venv for the bench only; the pages come from scripts/fetch_web_data.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/env.sh
DATA=$(scripts/fetch_web_data.sh | tail -1)
PY=.venv/bin/python
$PY -c 'import trafilatura, resiliparse, fastwarc, warcio, lxml_html_clean' 2>/dev/null \
  || $PY -m pip install -q --disable-pip-version-check trafilatura==2.3.1 resiliparse==2.0.1 \
       fastwarc==2.0.1 warcio==1.8.1 lxml_html_clean
if [[ -n "${QUERN_BIN:-}" ]]; then QUERN=$QUERN_BIN; else scripts/build-release.sh; QUERN=target/release/quern; fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/quern-web-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "quern: $QUERN ($(git rev-parse --short HEAD)); $(uptime)"
$PY -c "from importlib.metadata import version as v; print('trafilatura', v('trafilatura'), 'resiliparse', v('resiliparse'), 'fastwarc', v('fastwarc'), 'warcio', v('warcio'))"
$PY benches/web/run.py "$QUERN" "$DATA" "$WORK" "$@"
