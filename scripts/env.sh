# Sourced by quern's scripts: the environment a build needs. Safe to source from any directory.
QUERN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export QUERN_ROOT
# tch builds against the libtorch inside PyPI's torch==2.11.0, installed in .venv by setup.sh.
export LIBTORCH_USE_PYTORCH=1
export PATH="$QUERN_ROOT/.venv/bin:$PATH"
export VIRTUAL_ENV="$QUERN_ROOT/.venv"
# Tests install Python peers (pyarrow, duckdb, transformers) into the same virtualenv.
export QUERN_PYTHON="$QUERN_ROOT/.venv/bin/python"
# mold links the large test binaries several times faster; used when installed.
if command -v mold >/dev/null 2>&1; then
  export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=-fuse-ld=mold"
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Clippy lints every build of our own crates: cargo runs clippy-driver (a full rustc that also
# lints) for workspace members only, with warnings as errors. CI then compiles the
# dependencies once, for the tests, instead of a second time for a separate `cargo clippy`
# check build (about a fifth of a cold CI run on two cores). The flags are the same in every
# build, so switching between scripts never rebuilds. QUERN_LINT=0 turns it off.
if [ "${QUERN_LINT:-1}" != 0 ] && command -v clippy-driver >/dev/null 2>&1; then
  RUSTC_WORKSPACE_WRAPPER="$(command -v clippy-driver)"
  export RUSTC_WORKSPACE_WRAPPER
  export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
fi
