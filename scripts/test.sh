#!/usr/bin/env bash
# Sets up whatever is missing (torch in .venv, the Python test peers, mold) and runs every
# check: formatting and all tests of the workspace (unit, integration, doc tests).
# Clippy (`cargo clippy --workspace --all-targets -- -D warnings`) is run by scripts/lint.sh;
# it needs a second, check-mode build of every dependency, so it is kept out of this command
# until it has been made clean.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh --test
source scripts/env.sh
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace 2>&1
