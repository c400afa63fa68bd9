#!/usr/bin/env bash
# Measures the label quality of bench-data/lang/ with py3langid (installed into .peers/).
# Usage: benches/corpus/check_lang.sh [DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dir="${1:-$repo/bench-data/lang}"
[ -n "$(ls "$dir"/*.jsonl 2>/dev/null)" ] || "$here/make_corpus.sh"
[ -x "$repo/.peers/bin/python" ] || python3 -m venv "$repo/.peers"
"$repo/.peers/bin/python" -c "import py3langid" 2>/dev/null || "$repo/.peers/bin/pip" install -q py3langid
"$repo/.peers/bin/python" "$here/check_lang.py" "$dir"
