#!/usr/bin/env bash
# Start-up time of `quern stages` (BENCHMARKS.md `## startup`): the median and fastest of N
# runs of each binary given, side by side in one run.
#
#   benches/startup/run.sh [N] [BINARY...]    (default 15 runs of target/debug/quern)
#
# To compare with a build from before a change, copy its binary aside first
# (e.g. cp target/debug/quern /tmp/quern-before) and pass both.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
n="${1:-15}"
shift || true
[ $# -gt 0 ] || set -- target/debug/quern
echo "machine load: $(uptime)"
python3 - "$n" "$@" <<'PY'
import statistics, subprocess, sys, time
n = int(sys.argv[1])
for b in sys.argv[2:]:
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run([b, "stages"], stdout=subprocess.DEVNULL, check=True)
        ts.append(time.perf_counter() - t)
    print(f"{b}: median {statistics.median(ts) * 1e3:.1f} ms, fastest {min(ts) * 1e3:.1f} ms ({n} runs)")
PY
