#!/usr/bin/env bash
# Sets up whatever is missing (torch in .venv, the Python test peers, mold) and runs every
# check: formatting and all tests of the workspace (unit, integration, doc tests).
# Clippy runs with warnings as errors: scripts/env.sh makes every build of our crates a clippy
# build, so the test build is the lint (scripts/lint.sh runs `cargo clippy` alone).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh --test
t_setup=$SECONDS
source scripts/env.sh
echo "== cargo fmt --check"
cargo fmt --all --check
# The data side alone, without the `torch` feature, so that path cannot rot. With --workspace
# every member is still selected, so the dependencies' features unify as in the full build and
# only the quern package itself is compiled again (about two minutes on two cores).
echo "== the data side without libtorch (--no-default-features)"
cargo build --workspace --no-default-features --features quern-labeling/sql --bins
"${CARGO_TARGET_DIR:-target}/debug/quern" stages >/dev/null
if [ -n "${RUSTC_WORKSPACE_WRAPPER:-}" ]; then
  echo "== cargo build, every target, linted by clippy-driver (-D warnings)"
  cargo test --workspace --all-targets --no-run
else
  echo "== cargo clippy (-D warnings)"
  cargo clippy --workspace --all-targets -- -D warnings
fi
t_build=$((SECONDS - t_setup))
t0=$SECONDS
echo "== cargo test"
# Tests run two at a time on two cores; libtorch's OpenMP threads (one per core in each test
# process, tests' own and the quern and Python processes they start) then spin against each
# other and a model test runs several times slower. One libtorch thread per process instead.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# Every test's time, and the slowest at the end (scripts/test-runner.sh).
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$PWD/scripts/test-runner.sh"
log=target/test-times.log
mkdir -p target
cargo test --workspace 2>&1 | tee "$log"
echo "== the slowest tests (seconds; all of them in $log)"
# awk, not head: head exits after 15 lines, and once the sorted list outgrows the pipe's
# buffer sort dies of SIGPIPE, which pipefail turns into a failed run (exit 141).
sed -nE 's/^test (.*) \.\.\. ok <([0-9.]+)s>$/\2 \1/p' "$log" | sort -rn | awk 'NR <= 15'
echo "== times: setup ${t_setup}s, build ${t_build}s, tests $((SECONDS - t0))s, total ${SECONDS}s"
