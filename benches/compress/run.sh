#!/usr/bin/env bash
# `quern compress` on SmolLM2-135M-Instruct (the registry's Q4_1 GGUF, dequantized to f32: the
# "source"): perplexity of int8, int4 g128 (RTN and GPTQ), 50% unstructured and 2:4 pruning
# (magnitude and Wanda) against the source, on two held-out splits; a plain PyTorch
# implementation of Wanda and GPTQ (tests/peers/compress_ref.py, transformers' activations)
# on the same model and calibration rows, evaluated the same way; and batch-1 decoding
# speed of the int8 and int4 models on the low-bit products (quern's int8 decoding kernel,
# and quern's int4 decoding kernel) against quern fp32 and transformers' `generate` fp32 on the exported model,
# in the same run; the int8 model also with QUERN_MATVEC=libtorch (libtorch's int8 product);
# with the `mmlu` config, MMLU (every MMLU_EVERY-th question, default 47: 299 questions, all
# 57 subjects) of the source and of every model this run compressed, through `quern eval mc`.
# Wanda and GPTQ calibrate block by block (the default, --calib-stats sequential);
# int4-g128-gptq-src is GPTQ on the source model's statistics (one pass), for comparison;
# int4-g128-search is round-to-nearest with searched ranges (--range search) and
# int4-g128-gptq-act GPTQ in act order with searched ranges (int4-g128-gptq-act-minmax:
# act order alone); int4-g32 (not in the default list) is round-to-nearest in SmolLM2's own
# Q4_1 blocks of 32; int8-head is int8 with the
# output projection quantized too (--quant-head), decoded beside the others; int4-head (not
# in the default list) the same for int4 g128.
#
#   benches/compress/run.sh            (QUERN_BIN=path/to/quern to skip the release build)
#   SOURCE=quern benches/compress/run.sh
#
# SOURCE=quern compresses a model quern pretrains here instead (f32 from the start, unlike
# SmolLM2's 4-bit source): Llama-like, 4 layers, width 256, MLP 768, a 4,096-id BPE tokenizer
# trained by quern, PRE_STEPS (300) steps of 8 x 256 tokens on the copyright files of
# Debian's /usr/share/doc (every package but each 10th); its second evaluation split ("cr")
# is the copyright files of the held-out packages, since the licence texts are in its
# training data. MMLU is skipped for it (a 4M-parameter model answers at chance).
#
# Data (none of it looked at while writing the code): calibration on the GPL-3.0 text
# (tests/data/train/gpl-3.0.txt); evaluation on the English documents of the tests' mixed
# corpus (mail and man pages: tests/data/corpus/mixed.jsonl, lang "en") and on six licence
# texts from Debian's common-licenses (Apache-2.0, MPL-2.0, GPL-2, LGPL-2.1, Artistic,
# GFDL-1.3), each tokenized with SmolLM2's tokenizer, 256-token rows. EVAL_ROWS (16) and
# CALIB_ROWS (32) bound the work (EVAL_ROWS=16: 4,096 tokens of each split) on a 2-core machine. Prints JSON lines; BENCHMARKS.md
# ("compress") reports them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/env.sh
if [[ -z "${QUERN_BIN:-}" ]]; then scripts/build-release.sh >/dev/null; fi
Q=$(realpath "${QUERN_BIN:-target/release/quern}")
PY=$(pwd)/.venv/bin/python  # not realpath: that resolves the venv to its base interpreter
REPO=$(pwd)
EVAL_ROWS=${EVAL_ROWS:-16}
CALIB_ROWS=${CALIB_ROWS:-32}
THREADS=${THREADS:-2}
NEW=${NEW:-48}
CACHE=${QUERN_CACHE:-$HOME/.cache/quern}
GGUF=$CACHE/models/smollm2-135m-instruct.Q4_1.gguf
W=${WORK:-$(mktemp -d)}
[[ -n "${WORK:-}" ]] || trap 'rm -rf "$W"' EXIT
cd "$W"
echo "# machine: $(nproc --all) cores, load $(cut -d' ' -f1-3 /proc/loadavg); work in $W"

SOURCE=${SOURCE:-smollm2}
if [[ $SOURCE == quern ]]; then
  SRC=quern-src SPLIT2=cr
  TOK=tok_crtrain/tokenizer.json
  "$PY" - <<'PY'
import glob, json, os
files = sorted(glob.glob("/usr/share/doc/*/copyright"))
with open("crtrain.jsonl", "w") as tr, open("cr.jsonl", "w") as va:
    for i, f in enumerate(files):
        try:
            text = open(f, encoding="utf-8").read()
        except (UnicodeDecodeError, OSError):
            continue
        (va if i % 10 == 0 else tr).write(json.dumps({"id": os.path.dirname(f), "text": text}) + "\n")
PY
  if [[ ! -d $SRC ]]; then
    $Q ingest crtrain.jsonl --out ing_crtrain >/dev/null
    $Q tokenize --corpus ing_crtrain --train-vocab-size 4096 --objective clm --seq-len 256 --out tok_crtrain >/dev/null
    cat > src.toml <<EOF
out_dir = "$SRC"
[data]
train = "tok_crtrain/train"
[model]
layers = 4
heads = 4
dim = 256
mlp_hidden = 768
positions = "rotary"
norm = "rmsnorm"
mlp = "swiglu"
[optim]
lr = 2e-3
warmup_steps = 40
[train]
micro_batch = 8
max_steps = ${PRE_STEPS:-300}
eval_every = 0
seed = 1
[checkpoint]
every = 0
keep = 1
EOF
    t0=$(date +%s.%N)
    $Q train --quiet src.toml
    echo "{\"pretrained\": \"$SRC\", \"steps\": ${PRE_STEPS:-300}, \"train_s\": $(echo "$(date +%s.%N) - $t0" | bc)}"
  fi
else
  SRC=smollm2 SPLIT2=lic
  TOK=smollm2/tokenizer.json
  [[ -d smollm2 ]] || $Q import "$GGUF" --out smollm2 >/dev/null
fi
"$PY" - "$REPO" <<'PY'
import json, os, sys
repo = sys.argv[1]
docs = [json.loads(l) for l in open(f"{repo}/tests/data/corpus/mixed.jsonl")]
with open("en.jsonl", "w") as f:
    for d in docs:
        if d.get("lang") == "en":
            f.write(json.dumps({"id": d["id"], "text": d["text"]}) + "\n")
with open("lic.jsonl", "w") as f:
    for n in ["Apache-2.0", "MPL-2.0", "GPL-2", "LGPL-2.1", "Artistic", "GFDL-1.3"]:
        f.write(json.dumps({"id": n, "text": open(f"/usr/share/common-licenses/{n}").read()}) + "\n")
with open("cal.jsonl", "w") as f:
    f.write(json.dumps({"id": "gpl-3.0", "text": open(f"{repo}/tests/data/train/gpl-3.0.txt").read()}) + "\n")
PY
for c in en $SPLIT2 cal; do
  [[ -d tok_$c ]] && continue
  $Q ingest $c.jsonl --out ing_$c >/dev/null
  $Q tokenize --corpus ing_$c --tokenizer "$TOK" --objective clm --seq-len 256 --out tok_$c >/dev/null
done

ppl() { # model split rows -> perplexity
  $Q eval ppl --model "$1" --data "$2" --max-rows "$3" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["result"]["overall"]["ppl"])'
}
MADE=()
run() { # name, flags...
  local name=$1; shift
  MADE+=("$name")
  local t0=$(date +%s.%N)
  local cal=()  # calibration rows for the methods that read them
  if [[ " $* " == *" wanda "* || " $* " == *" gptq "* ]]; then cal=(--calib tok_cal/train --calib-rows "$CALIB_ROWS"); fi
  $Q compress $SRC --out "$name" --force "${cal[@]}" "$@" --json > "$name.json"
  local secs=$(echo "$(date +%s.%N) - $t0" | bc)
  local en=$(ppl "$name" tok_en/train "$EVAL_ROWS") two=$(ppl "$name" tok_$SPLIT2/train "$EVAL_ROWS")
  "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1]+".json")); print(json.dumps({"model": sys.argv[1], "flags": sys.argv[6], "ppl_en": float(sys.argv[2]), "ppl_"+sys.argv[5]: float(sys.argv[3]), "stored_mb": r["bytes"]["compressed_stored"]/1e6, "sparsity": r["block_matrices"]["sparsity"], "compress_s": float(sys.argv[4]), "steps": r["steps"]}))' "$name" "$en" "$two" "$secs" "$SPLIT2" "$*"
}
echo "{\"model\": \"source\", \"source\": \"$SRC\", \"ppl_en\": $(ppl $SRC tok_en/train "$EVAL_ROWS"), \"ppl_$SPLIT2\": $(ppl $SRC tok_$SPLIT2/train "$EVAL_ROWS")}"
# CONFIGS picks a subset by name (default: all, in this order).
CONFIGS=${CONFIGS:-"int8 int4-g128 int8-head decode int4-g128-search int4-g128-gptq int4-g128-gptq-src int4-g128-gptq-act mag50 wanda50 mag24 wanda24 int8-gptq mmlu peer"}
want() { [[ " $CONFIGS " == *" $1 "* ]]; }
want int8 && run int8 --quant int8
want int4-g128 && run int4-g128 --quant int4 --group 128
want int8-head && run int8-head --quant int8 --quant-head
want int4-head && run int4-head --quant int4 --group 128 --quant-head
# Decoding at batch 1: quern fp32, int8 and int4 on the low-bit products, and transformers
# fp32 on the exported model, interleaved, each REPEAT times (medians).
want decode && { [[ -d $SRC-hf ]] || $Q export $SRC --format hf --out $SRC-hf >/dev/null; }
DECODE="$SRC int8 int4-g128 int8-libtorch"
want int8-head && DECODE="$DECODE int8-head"
want int4-head && DECODE="$DECODE int4-head"
want decode && "$PY" "$REPO/benches/generate/bandwidth.py"
want decode && for m in $DECODE $SRC; do
  if [[ $m == int8-libtorch ]]; then dir=int8; export QUERN_MATVEC=libtorch; else dir=$m; unset QUERN_MATVEC; fi
  $Q generate --model $dir --bench --prompt-tokens 16 --batch-size 1 --max-tokens "$NEW" \
    --threads "$THREADS" --repeat 3 --json | "$PY" -c 'import json,sys; r=json.loads(sys.stdin.read()); print(json.dumps({"tool": "quern", "model": sys.argv[1], "decode_tokens_per_s": r["decode_tokens_per_s"], "low_bit_matrices": r["low_bit_matrices"], "weight_mb_per_step": r["weight_bytes_per_step"]/1e6}))' $m
  if [[ $m == int8 ]]; then
    OMP_NUM_THREADS=$THREADS "$PY" "$REPO/benches/generate/hf_generate.py" --hf $SRC-hf --batch 1 \
      --prompt-tokens 16 --new-tokens "$NEW" --repeat 3 | "$PY" -c 'import json,sys; r=json.loads(sys.stdin.read()); r["tool"]="transformers"; print(json.dumps(r))'
  fi
done
unset QUERN_MATVEC

want int4-g128-gptq && run int4-g128-gptq --quant int4 --group 128 --rounding gptq
want int4-g128-gptq-src && run int4-g128-gptq-src --quant int4 --group 128 --rounding gptq --calib-stats source
want int4-g128-search && run int4-g128-search --quant int4 --group 128 --range search
want int4-g128-gptq-act && run int4-g128-gptq-act --quant int4 --group 128 --rounding gptq --act-order --range search
want int4-g128-gptq-act-minmax && run int4-g128-gptq-act-minmax --quant int4 --group 128 --rounding gptq --act-order
want int4-g32 && run int4-g32 --quant int4 --group 32
want mag50 && run mag50 --prune magnitude --sparsity 0.5
want wanda50 && run wanda50 --prune wanda --sparsity 0.5
want mag24 && run mag24 --prune magnitude --pattern 2:4
want wanda24 && run wanda24 --prune wanda --pattern 2:4
want int8-gptq && run int8-gptq --quant int8 --rounding gptq

# MMLU of the source and of each model compressed above: accuracy, and two measures finer
# than accuracy at a model this near chance: the mean probability of the right letter among
# the four, and the share of questions whose answer equals the source's.
if want mmlu && [[ $SOURCE != quern ]]; then
  awk -v k="${MMLU_EVERY:-47}" '(NR - 1) % k == 0 || /"correct_answer": "answer"/' "$(cd "$REPO" && benches/eval/mmlu.sh)" > mmlu.jsonl
  for m in smollm2 "${MADE[@]}"; do
    $Q eval mc --model "$m" --task mmlu.jsonl --format mmlu --batch-size 8 --json --details "$m.mmlu.jsonl" > "$m.mmlu.json"
    "$PY" - "$m" <<'PY'
import json, math, sys
m = sys.argv[1]
r = json.load(open(f"{m}.mmlu.json"))["result"]
d = [json.loads(l) for l in open(f"{m}.mmlu.jsonl")]
s = [json.loads(l) for l in open("smollm2.mmlu.jsonl")]
def p_gold(x):
    z = max(x["loglik"])
    e = [math.exp(v - z) for v in x["loglik"]]
    return e[x["gold"]] / sum(e)
print(json.dumps({"model": m, "mmlu_questions": r["overall"]["questions"], "mmlu_acc": r["overall"]["acc"],
                  "mmlu_acc_stderr": r["acc_stderr"], "mmlu_p_gold": sum(map(p_gold, d)) / len(d),
                  "same_answer_as_source": sum(a["pred"] == b["pred"] for a, b in zip(d, s)) / len(d)}))
PY
  done
fi

# The plain PyTorch peer on the same model and calibration rows (Wanda 50%, GPTQ int4 g128),
# its weights put into a copy of the source's Hugging Face export and evaluated by quern.
want peer || exit 0
[[ -d $SRC-hf ]] || $Q export $SRC --format hf --out $SRC-hf >/dev/null
"$PY" - "$REPO" "$CALIB_ROWS" "$SRC-hf" <<'PY'
import glob, json, sys
import pyarrow.parquet as pq
rows = []
for f in sorted(glob.glob("tok_cal/train/*.parquet")):
    for ids in pq.read_table(f).column("tokens").to_pylist():
        rows.append(ids[:256])
json.dump({"dir": sys.argv[3], "calib": rows[: int(sys.argv[2])], "ops": [
    {"kind": "wanda", "sparsity": 0.5, "pattern": "unstructured", "sequential": True},
    {"kind": "gptq", "bits": 4, "group": 128, "damp": 0.01, "block": 128, "sequential": True}]},
    open("peer_task.json", "w"))
PY
t0=$(date +%s.%N)
"$PY" "$REPO/tests/peers/compress_ref.py" peer_task.json peer.safetensors
echo "{\"peer_s\": $(echo "$(date +%s.%N) - $t0" | bc)}"
"$PY" - "$SRC-hf" <<'PY'
import shutil, sys
from safetensors.torch import load_file, save_file
peer = load_file("peer.safetensors")
base = load_file(f"{sys.argv[1]}/model.safetensors")
for i, name in enumerate(["peer-wanda50", "peer-int4-g128-gptq"]):
    shutil.rmtree(name, ignore_errors=True)
    shutil.copytree(sys.argv[1], name)
    w = dict(base)
    for k, v in peer.items():
        if k.startswith(f"o{i}."):
            w[k[len(f"o{i}."):]] = v
    save_file(w, f"{name}/model.safetensors", metadata={"format": "pt"})
PY
for name in peer-wanda50 peer-int4-g128-gptq; do
  echo "{\"model\": \"$name\", \"ppl_en\": $(ppl $name tok_en/train "$EVAL_ROWS"), \"ppl_$SPLIT2\": $(ppl $name tok_$SPLIT2/train "$EVAL_ROWS")}"
done

