#!/usr/bin/env bash
# Sets up whatever is missing (torch in .venv, the Python test peers, mold) and runs every
# check: formatting and all tests of the workspace (unit, integration, doc tests).
# Clippy runs with warnings as errors: scripts/env.sh makes every build of our crates a clippy
# build, so the test build is the lint (scripts/lint.sh runs `cargo clippy` alone).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh --test
source scripts/env.sh
echo "== cargo fmt --check"
cargo fmt --all --check
if [ -n "${RUSTC_WORKSPACE_WRAPPER:-}" ]; then
  echo "== cargo build, every target, linted by clippy-driver (-D warnings)"
  cargo test --workspace --all-targets --no-run
else
  echo "== cargo clippy (-D warnings)"
  cargo clippy --workspace --all-targets -- -D warnings
fi
echo "== cargo test"
# Tests run two at a time on two cores; libtorch's OpenMP threads (one per core in each test
# process, tests' own and the quern and Python processes they start) then spin against each
# other and a model test runs several times slower. One libtorch thread per process instead.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
cargo test --workspace 2>&1
