#!/usr/bin/env bash
# Sets up whatever is missing (torch in .venv, mold) and runs `quern demo`: the whole journey
# on the corpus embedded in the binary, in a temporary directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
source scripts/env.sh
cargo build --quiet --bins
exec target/debug/quern demo "$@"
