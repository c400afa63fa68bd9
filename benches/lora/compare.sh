#!/usr/bin/env bash
# LoRA fine-tuning on CPU, side by side: quern (`quern train` with [lora]) against
# transformers + peft (peft_lora.py) on SmolLM2-135M-Instruct, the same shards (the mixed
# test corpus tokenized with SmolLM2's tokenizer, 64-token rows), rank 8, alpha 16, every
# linear layer, AdamW lr 1e-3 with 2 warmup steps and cosine decay, clipping at 1.0,
# micro-batch 4, fp32. Prints the median step time of each, the ratio and both loss curves'
# ends. Needs the models from scripts/fetch_models.sh and `scripts/setup.sh --test` (peft).
# QUERN=path/to/quern (default target/release/quern when built, else target/debug/quern),
# THREADS (default 2), STEPS (default 10).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
source "$root/scripts/env.sh"
q="${QUERN:-}"
[[ -z $q && -x $root/target/release/quern ]] && q="$root/target/release/quern"
[[ -z $q ]] && q="$root/target/debug/quern"
threads="${THREADS:-2}"
steps="${STEPS:-10}"
work="$root/bench-data/lora"
gguf="${QUERN_CACHE:-$HOME/.cache/quern}/models/smollm2-135m-instruct.Q4_1.gguf"
mkdir -p "$work"
[[ -d $work/smollm2 ]] || "$q" import "$gguf" --out "$work/smollm2"
[[ -d $work/tok/train ]] || "$q" tokenize --corpus "$root/tests/data/corpus/mixed.jsonl" \
  --tokenizer "$work/smollm2/tokenizer.json" --out "$work/tok" --seq-len 64 --objective clm
cat > "$work/lora.toml" <<TOML
out_dir = "run"
[data]
train = "tok/train"
[init]
from = "smollm2"
[optim]
lr = 1e-3
warmup_steps = 2
[train]
micro_batch = 4
max_steps = $steps
eval_every = 0
device = "cpu"
[checkpoint]
every = 0
keep = 1
[lora]
rank = 8
alpha = 16.0
targets = ["all-linear"]
TOML
echo "quern: $q, $threads threads, $steps steps; load average $(cut -d' ' -f1-3 /proc/loadavg)"
# ABBA order (quern, peft, peft, quern), so that a load that drifts during the run weighs on
# both sides alike.
run_quern() {
  OMP_NUM_THREADS=$threads "$q" train --quiet --force --json "$work/lora.toml" > "$work/quern-$1.json"
}
run_peft() {
  OMP_NUM_THREADS=$threads "$QUERN_PYTHON" "$here/peft_lora.py" --gguf "$gguf" --data "$work/tok/train" \
    --steps "$steps" --threads "$threads" > "$work/peft-$1.json" 2>/dev/null
}
run_quern 1; run_peft 1; run_peft 2; run_quern 2
"$QUERN_PYTHON" - "$work" <<'PY'
import json, statistics, sys
w = sys.argv[1]
tok = 4 * 64
qs, ps = [], []
for i in (1, 2):
    q = json.load(open(f"{w}/quern-{i}.json")); p = json.load(open(f"{w}/peft-{i}.json"))
    qs.append(statistics.median(tok / l["tokens_per_s"] for l in q["losses"][1:]))
    ps.append(statistics.median(p["step_s"][1:]))
print(f"trainable parameters: quern {q['trainable_parameters']:,}, peft {p['trainable']:,}")
print("median step after the first, per run: quern " + ", ".join(f"{s:.3f} s" for s in qs)
      + "; peft " + ", ".join(f"{s:.3f} s" for s in ps))
qm, pm = sum(qs) / 2, sum(ps) / 2
print(f"quern {pm / qm:.2f}x peft's speed (mean of the two runs each)")
print(f"loss first/last: quern {q['losses'][0]['loss']:.4f} -> {q['losses'][-1]['loss']:.4f}, "
      f"peft {p['losses'][0]:.4f} -> {p['losses'][-1]:.4f} (rows in another order)")
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
