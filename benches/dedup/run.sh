#!/usr/bin/env bash
# Side-by-side near-dedup benchmark (quern vs datasketch, rensa, datatrove) and the
# bounded-memory run. Same corpus, same parameters (simplify_text, 5-word shingles,
# 14 bands x 8 rows). Peers are installed from PyPI into .peers/.
#
#   benches/dedup/run.sh            # 50k-document comparison + 2M-document memory run
#   PEER_DOCS=20000 BIG_DOCS=0 benches/dedup/run.sh   # smaller, skip the memory run
#
# Every timing line is preceded by `load:` and the 1-minute load average (uptime), since the
# numbers are only comparable on a quiet machine. The memory run is done four times: with
# --memory-limit 1GB twice (determinism), 200MB and unlimited; all must give the same clusters.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/env.sh
PEER_DOCS=${PEER_DOCS:-50000}
BIG_DOCS=${BIG_DOCS:-2000000}
D=bench-data/dedup
mkdir -p "$D"

if [[ ! -x .peers/bin/python ]]; then python3 -m venv .peers; fi
.peers/bin/python -c 'import datasketch, rensa, datatrove' 2>/dev/null \
  || .peers/bin/pip install -q --disable-pip-version-check datasketch rensa datatrove

scripts/build-release.sh
BIN=target/release/examples/dedup_bench

[[ -f $D/peers-$PEER_DOCS.jsonl ]] || python3 benches/dedup/make_corpus.py "$D/peers-$PEER_DOCS.jsonl" "$PEER_DOCS"
C=$D/peers-$PEER_DOCS.jsonl
[[ -f $C.truth.tsv ]] || $BIN truth "$C" "$C.truth.tsv" --min 0.5

load() { echo "load: $(cut -d' ' -f1 /proc/loadavg)"; }
echo "== throughput, one core each (RAYON_NUM_THREADS=1) =="
load; RAYON_NUM_THREADS=1 $BIN run "$C" --clusters "$D/quern.tsv" | tee "$D/quern.json"
echo "== quern, all cores =="
load; $BIN run "$C" | tee "$D/quern-all.json"
for t in rensa datasketch datatrove; do
  load; .peers/bin/python benches/dedup/peers.py $t "$C" "$D/$t.tsv" "$D/work-$t" 2>/dev/null | tail -1 | tee "$D/$t.json"
done
echo "== quality vs exact Jaccard (positives >= 0.8, negatives < 0.5) =="
.peers/bin/python benches/dedup/eval.py "$C.truth.tsv" quern="$D/quern.tsv" rensa="$D/rensa.tsv" \
  datasketch="$D/datasketch.tsv" datatrove="$D/datatrove.tsv" | tee "$D/eval.jsonl"

if (( BIG_DOCS > 0 )); then
  B=$D/big-$BIG_DOCS.jsonl
  [[ -f $B ]] || python3 benches/dedup/make_corpus.py "$B" "$BIG_DOCS"
  echo "== $BIG_DOCS documents, memory_limit 1GB vs unlimited (peak RSS from /usr/bin/time -v) =="
  for run in 1GB 1GB-again 200MB none; do
    args=(); [[ $run == 1GB* ]] && args=(--memory-limit 1GB --spill-dir "$D")
    [[ $run == 200MB ]] && args=(--memory-limit 200MB --spill-dir "$D")
    load; /usr/bin/time -v $BIN run "$B" "${args[@]}" 2> "$D/time-$run.txt" | tee "$D/big-$run.json"
    grep -E "Maximum resident|Elapsed" "$D/time-$run.txt"
  done
  fp() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['fingerprint'])" "$1"; }
  a=$(fp "$D/big-1GB.json"); a2=$(fp "$D/big-1GB-again.json"); c=$(fp "$D/big-200MB.json")
  b=$(fp "$D/big-none.json")
  [[ $a == "$a2" && $a == "$c" && $a == "$b" ]] && echo "same clusters in all four runs: $a" \
    || { echo "DIFFERENT clusters: 1GB $a, 1GB again $a2, 200MB $c, unlimited $b"; exit 1; }
fi
