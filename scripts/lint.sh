#!/usr/bin/env bash
# Clippy with warnings as errors over every target of the workspace.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
cargo clippy --workspace --all-targets -- -D warnings
