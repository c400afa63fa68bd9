#!/usr/bin/env bash
# The one release build of quern: every binary and example of the workspace, default features.
# Benches call this and take their binaries from target/release and target/release/examples.
# A different -p/feature set would rebuild arrow/datafusion (30+ minutes on 2 cores), so benches
# never run `cargo build --release` themselves.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
cargo build --release --workspace --bins --examples
