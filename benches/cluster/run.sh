#!/usr/bin/env bash
# `quern build` locally vs on a localhost Ballista cluster (one scheduler, two executors with
# one task slot each), on the benchmark corpus (bench-data/corpus.jsonl from
# benches/corpus/make_corpus.sh) cut into PARTS input files (default 8: a unit per file),
# with map stages (normalize, gopher_quality, language, pii). Reports wall time of each build
# and the peak RSS of every process (the local build; the cluster's client, scheduler and
# executors), and checks that both builds wrote the same manifest.
# Usage: benches/cluster/run.sh [INPUT [PARTS]]; QUERN_BIN=path uses that binary instead of
# the release build (scripts/build-release.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/env.sh
input=${1:-bench-data/corpus.jsonl}
parts=${2:-8}
[[ -f $input ]] || benches/corpus/make_corpus.sh
if [[ -z ${QUERN_BIN:-} ]]; then
  scripts/build-release.sh
  QUERN_BIN=target/release/quern
fi
bin=$(realpath "$QUERN_BIN")
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/input"
total=$(wc -l < "$input")
split -d -a 3 --additional-suffix=.jsonl -l $(( (total + parts - 1) / parts )) "$input" "$work/input/part-"
for name in local cluster; do
  cat > "$work/$name.toml" <<TOML
[input]
paths = ["$work/input"]
[output]
dir = "out-$name"
[[stages]]
type = "normalize"
[[stages]]
type = "gopher_quality"
[[stages]]
type = "language"
[[stages]]
type = "pii"
TOML
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
peak_mib() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
size_mb=$(du -m "$input" | cut -f1)
echo "input: $input ($size_mb MB) in $parts files; binary: $bin; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for round in 1 2; do
  rm -rf "$work/out-local" "$work/out-cluster"
  /usr/bin/time -f "%e %M" -o "$work/local.time" "$bin" build "$work/local.toml" --quiet >/dev/null 2>"$work/local.err" || { cat "$work/local.err"; exit 1; }
  read -r ls lk < "$work/local.time"

  pids=()
  "$bin" cluster scheduler --bind 127.0.0.1:0 > "$work/sched.out" 2>/dev/null &
  sched=$!; pids+=("$sched")
  until grep -q 'listening on' "$work/sched.out"; do sleep 0.1; done
  addr=$(sed -n 's/.*listening on //p' "$work/sched.out")
  execs=()
  for i in 1 2; do
    p=$(free_port); g=$(free_port)
    "$bin" cluster executor --scheduler "$addr" --bind "127.0.0.1:$p" --grpc-port "$g" --slots 1 \
      --work-dir "$work/exec-$i" >/dev/null 2>&1 &
    execs+=($!); pids+=($!)
    until (exec 3<>"/dev/tcp/127.0.0.1/$g") 2>/dev/null; do sleep 0.1; done
  done
  /usr/bin/time -f "%e %M" -o "$work/cluster.time" "$bin" build "$work/cluster.toml" --quiet --cluster "$addr" >/dev/null 2>"$work/cluster.err" || { cat "$work/cluster.err"; exit 1; }
  read -r cs ck < "$work/cluster.time"
  sm=$(peak_mib "$sched"); e1=$(peak_mib "${execs[0]}"); e2=$(peak_mib "${execs[1]}")
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pids=()
  cmp -s "$work/out-local/manifest.json" "$work/out-cluster/manifest.json" \
    || { echo "the two builds' manifests differ"; exit 1; }
  python3 - "$size_mb" "$ls" "$lk" "$cs" "$ck" "$sm" "$e1" "$e2" "$round" <<'PY'
import sys
mb, ls, lk, cs, ck, sm, e1, e2, r = sys.argv[1:]
mb, ls, cs = float(mb), float(ls), float(cs)
print(f"round {r}: local {ls:.2f}s ({mb/ls:.0f} MB/s, {int(lk)/1024:.0f} MiB peak)  "
      f"cluster {cs:.2f}s ({mb/cs:.0f} MB/s; peak client {int(ck)/1024:.0f} MiB, scheduler {sm} MiB, "
      f"executors {e1} + {e2} MiB)  time ratio {cs/ls:.2f}  same manifest")
PY
done
