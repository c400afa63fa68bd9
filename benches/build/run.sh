#!/usr/bin/env bash
# Runner overhead: `quern build` with a pass-through stage vs plain `quern ingest`, on the
# same real JSONL (bench-data/corpus.jsonl from benches/corpus/make_corpus.sh), in one run.
# Reports wall time and peak RSS of each and their ratio. Usage: benches/build/run.sh [INPUT]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/env.sh
input=${1:-bench-data/corpus.jsonl}
[[ -f $input ]] || benches/corpus/make_corpus.sh
scripts/build-release.sh
bin=target/release/quern
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cat > "$work/pipeline.toml" <<TOML
[input]
paths = ["$(realpath "$input")"]
[output]
dir = "build-out"
[[stages]]
type = "pass"
TOML
measure() { # name, command...
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/$name.time" "$@" >/dev/null 2>"$work/$name.err" || { cat "$work/$name.err"; exit 1; }
  read -r secs kb < "$work/$name.time"
  echo "$name $secs $kb"
}
size_mb=$(du -m "$input" | cut -f1)
for round in 1 2; do
  rm -rf "$work/ingest-out" "$work/build-out"
  i=$(measure ingest "$bin" ingest "$input" --out "$work/ingest-out")
  b=$(measure build "$bin" build "$work/pipeline.toml" --quiet)
  read -r _ is ik <<<"$i"; read -r _ bs bk <<<"$b"
  python3 - "$size_mb" "$is" "$ik" "$bs" "$bk" "$round" <<'PY'
import sys
mb, is_, ik, bs, bk, r = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
print(f"round {r}: ingest {is_:.2f}s ({mb/is_:.0f} MB/s, {ik/1024:.0f} MiB peak)  "
      f"build+pass {bs:.2f}s ({mb/bs:.0f} MB/s, {bk/1024:.0f} MiB peak)  "
      f"time ratio {bs/is_:.3f}  memory ratio {bk/ik:.3f}")
PY
done
