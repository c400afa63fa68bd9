#!/usr/bin/env bash
# Ingest side by side with DuckDB on the same real JSONL (bench-data/corpus.jsonl, >= 200 MB,
# built by benches/corpus/make_corpus.sh): wall time, throughput and peak RSS (/usr/bin/time -v),
# printed as ratios (DuckDB / quern: above 1 means quern is faster or smaller).
#
#   benches/ingest/run.sh [CORPUS.jsonl]
#
# quern: `target/release/quern ingest` from scripts/build-release.sh (or QUERN_BIN when set).
# DuckDB: COPY (SELECT * FROM read_json_auto(...)) TO ... (FORMAT parquet), from PyPI into .peers/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/env.sh
CORPUS=${1:-bench-data/corpus.jsonl}
if [[ ! -f $CORPUS ]]; then
  benches/corpus/make_corpus.sh
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/quern-ingest-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if [[ ! -x .peers/bin/python ]]; then python3 -m venv .peers; fi
.peers/bin/python -c 'import duckdb' 2>/dev/null || .peers/bin/pip install -q --disable-pip-version-check duckdb

if [[ -n "${QUERN_BIN:-}" ]]; then
  QUERN=("$QUERN_BIN" ingest); WHAT="$QUERN_BIN ingest"
else
  scripts/build-release.sh
  QUERN=(target/release/quern ingest); WHAT="target/release/quern ingest"
fi

measure() { # name, command... → prints "seconds max_rss_kb"
  local name=$1; shift
  /usr/bin/time -v "$@" >"$WORK/$name.out" 2>"$WORK/$name.time" || { cat "$WORK/$name.time" >&2; exit 1; }
  local wall rss
  wall=$(grep 'Elapsed (wall clock)' "$WORK/$name.time" | awk '{print $NF}' | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
  rss=$(grep 'Maximum resident set size' "$WORK/$name.time" | awk '{print $NF}')
  echo "$wall $rss"
}

BYTES=$(stat -c %s "$CORPUS")
cat "$CORPUS" >/dev/null # warm the page cache for both
read -r D_S D_KB < <(measure duckdb .peers/bin/python -c "
import duckdb, sys
duckdb.sql(\"COPY (SELECT * FROM read_json_auto('$CORPUS')) TO '$WORK/duck.parquet' (FORMAT parquet)\")
")
read -r Q_S Q_KB < <(measure quern "${QUERN[@]}" "$CORPUS" --out "$WORK/quern")
D_ROWS=$(.peers/bin/python -c "import duckdb; print(duckdb.sql(\"SELECT count(*) FROM '$WORK/duck.parquet'\").fetchall()[0][0])")
Q_ROWS=$(.peers/bin/python -c "import duckdb; print(duckdb.sql(\"SELECT count(*) FROM read_parquet('$WORK/quern/docs/*.parquet')\").fetchall()[0][0])")

python3 - "$BYTES" "$D_S" "$D_KB" "$Q_S" "$Q_KB" "$D_ROWS" "$Q_ROWS" "$WHAT" "$CORPUS" "$(nproc)" <<'PY'
import sys
b, ds, dkb, qs, qkb, dr, qr, what, corpus, cores = sys.argv[1:]
b, ds, dkb, qs, qkb = int(b), float(ds), int(dkb), float(qs), int(qkb)
mb = b / 1e6
print(f"corpus: {corpus} ({mb:.0f} MB, {qr} docs), {cores} cores")
print(f"| tool | wall s | MB/s | peak RSS MB | rows |")
print(f"|---|---|---|---|---|")
print(f"| DuckDB COPY read_json_auto → parquet | {ds:.2f} | {mb/ds:.0f} | {dkb/1024:.0f} | {dr} |")
print(f"| {what} | {qs:.2f} | {mb/qs:.0f} | {qkb/1024:.0f} | {qr} |")
print(f"speed ratio (DuckDB time / quern time): {ds/qs:.2f}x; memory ratio (DuckDB RSS / quern RSS): {dkb/qkb:.2f}x")
PY
