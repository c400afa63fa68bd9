#!/usr/bin/env bash
# The runner scripts/test.sh gives cargo for test binaries: runs one with libtest's
# `--report-time`, so every test's time is printed ("test name ... ok <1.234s>") and
# test.sh can list the slowest. The option is unstable; RUSTC_BOOTSTRAP=1 allows it for this
# process only. It is never set for the compiler (it would change what some build scripts
# see and rebuild every crate), and a runner is not part of any build's fingerprint.
exe=$1
shift
exec env RUSTC_BOOTSTRAP=1 "$exe" "$@" -Z unstable-options --report-time
