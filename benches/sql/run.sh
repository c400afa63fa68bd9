#!/usr/bin/env bash
# Side-by-side: the same four queries (count by source, average length by source, a regex
# count, top first words) in `quern sql` and DuckDB, over the same ingested Parquet of
# bench-data/corpus.jsonl. Prints a Markdown table of times and ratios (goal: quern within
# 1.5x of DuckDB) for BENCHMARKS.md's `## sql` section.
#
#   benches/sql/run.sh [RUNS]
#
# Env: CORPUS (default bench-data/corpus.jsonl, made by benches/corpus/make_corpus.sh),
#      SQL_CORPUS (default bench-data/sql-corpus: where `quern ingest` writes it; reused).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/env.sh
RUNS=${1:-3}
CORPUS=${CORPUS:-bench-data/corpus.jsonl}
SQL_CORPUS=${SQL_CORPUS:-bench-data/sql-corpus}

if [[ ! -f $CORPUS ]]; then
  [[ -x benches/corpus/make_corpus.sh ]] || { echo "no $CORPUS and no benches/corpus/make_corpus.sh to make it" >&2; exit 1; }
  benches/corpus/make_corpus.sh
fi
# The peer, in its own virtualenv (ignored by git).
[[ -x .peers/bin/python ]] || python3 -m venv .peers
.peers/bin/python -c 'import duckdb, pyarrow' 2>/dev/null || .peers/bin/pip install -q --disable-pip-version-check duckdb pyarrow

# The one release build of the workspace (scripts/build-release.sh); a different feature set
# would rebuild arrow/datafusion.
scripts/build-release.sh
BIN=$PWD/target/release/quern
if [[ ! -f $SQL_CORPUS/manifest.json ]]; then
  if "$BIN" ingest --help >/dev/null 2>&1; then
    echo "ingesting $CORPUS into $SQL_CORPUS"
    "$BIN" ingest "$CORPUS" --out "$SQL_CORPUS"
  else
    echo "no \`quern ingest\` in this build: sharding $CORPUS with pyarrow in ShardWriter's layout"
    .peers/bin/python benches/sql/shard_corpus.py "$CORPUS" "$SQL_CORPUS"
  fi
fi
echo "load before the queries: $(cut -d' ' -f1 /proc/loadavg) (1-minute average; compare only on a quiet machine)"
.peers/bin/python benches/sql/compare.py "$BIN" "$SQL_CORPUS" "$RUNS"
