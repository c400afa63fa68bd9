#!/usr/bin/env bash
# Continual training with and without replay: a small model pretrained on "old" data
# (the English mail and man pages of the tests' mixed corpus) continues on "new" data (six
# licence texts from Debian's common-licenses), once on the new data alone and once with a
# replay split of the old data at REPLAY (0.25) of the rows (`[[data.mix]]`). Perplexity on
# held-out documents of both, before and after, shows what each forgets and learns.
#
#   benches/continual/run.sh        (QUERN_BIN=path/to/quern to skip the release build)
#
# Prints a JSON line per model; BENCHMARKS.md ("continual") reports them as a table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/env.sh
if [[ -z "${QUERN_BIN:-}" ]]; then scripts/build-release.sh >/dev/null; fi
Q=$(realpath "${QUERN_BIN:-target/release/quern}")
PY=$(pwd)/.venv/bin/python  # not realpath: that resolves the venv to its base interpreter
REPO=$(pwd)
REPLAY=${REPLAY:-0.25}
PRE_STEPS=${PRE_STEPS:-200}
NEW_STEPS=${NEW_STEPS:-100}
W=${WORK:-$(mktemp -d)}
[[ -n "${WORK:-}" ]] || trap 'rm -rf "$W"' EXIT
cd "$W"
echo "# machine: $(nproc --all) cores, load $(cut -d' ' -f1-3 /proc/loadavg); work in $W"
"$PY" - "$REPO" <<'PY'
import json, sys
repo = sys.argv[1]
old = [json.loads(l) for l in open(f"{repo}/tests/data/corpus/mixed.jsonl")]
old = [{"id": d["id"], "text": d["text"]} for d in old if d.get("lang") == "en"]
new = []
for n in ["Apache-2.0", "MPL-2.0", "GPL-2", "LGPL-2.1", "Artistic", "GFDL-1.3"]:
    text = open(f"/usr/share/common-licenses/{n}").read()
    # Paragraphs as documents, so that held-out documents come from every licence.
    for i, p in enumerate(t for t in text.split("\n\n") if t.strip()):
        new.append({"id": f"{n}/{i}", "text": p})
def write(name, docs):
    with open(name, "w") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
# Every 10th document held out.
write("old_train.jsonl", [d for i, d in enumerate(old) if i % 10])
write("old_val.jsonl", [d for i, d in enumerate(old) if i % 10 == 0])
write("new_train.jsonl", [d for i, d in enumerate(new) if i % 10])
write("new_val.jsonl", [d for i, d in enumerate(new) if i % 10 == 0])
write("all.jsonl", old + new)
PY
$Q ingest all.jsonl --out ing_all >/dev/null
$Q tokenize --corpus ing_all --train-vocab-size 2048 --objective clm --seq-len 64 --out tok_all >/dev/null
for s in old_train old_val new_train new_val; do
  $Q ingest $s.jsonl --out ing_$s >/dev/null
  $Q tokenize --corpus ing_$s --tokenizer tok_all/tokenizer.json --objective clm --seq-len 64 --out tok_$s >/dev/null
done
model='[model]
layers = 2
heads = 4
dim = 64
positions = "rotary"
norm = "rmsnorm"
mlp = "swiglu"'
common() { printf '[train]\nmicro_batch = 8\neval_every = 0\nseed = 1\nmax_steps = %s\n[checkpoint]\nevery = 0\nkeep = 1\n' "$1"; }
cat > pre.toml <<EOF
out_dir = "pre"
[data]
train = "tok_old_train/train"
$model
[optim]
lr = 3e-3
warmup_steps = 20
$(common "$PRE_STEPS")
EOF
for kind in plain replay; do
  mix=""
  [[ $kind == replay ]] && mix="train_weight = $(awk "BEGIN { print 1 - $REPLAY }")
[[data.mix]]
split = \"tok_old_train/train\"
weight = $REPLAY"
  cat > $kind.toml <<EOF
out_dir = "$kind"
[data]
train = "tok_new_train/train"
$mix
[init]
from = "pre"
[optim]
lr = 1e-3
warmup_steps = 10
$(common "$NEW_STEPS")
EOF
done
$Q train --quiet --force pre.toml
$Q train --quiet --force plain.toml
$Q train --quiet --force --json replay.toml > replay.json
ppl() { $Q eval ppl --model "$1" --data "$2" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["result"]["overall"]["ppl"])'; }
for m in pre plain replay; do
  echo "{\"model\": \"$m\", \"ppl_old_val\": $(ppl $m tok_old_val/train), \"ppl_new_val\": $(ppl $m tok_new_val/train)}"
done
"$PY" -c 'import json; r=json.load(open("replay.json")); print(json.dumps({"replay_mix": r["mix"]}))'
