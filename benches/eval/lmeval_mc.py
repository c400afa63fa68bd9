"""lm-evaluation-harness's own scorer (HFLM.loglikelihood) on the questions quern scores, for
benches/eval/run.sh. The contexts are the harness's `mmlu` prompt (built here, as the `mmlu`
task's templates do, because the task itself downloads its data from a hub); the encoding of
the context/continuation boundary, the batching and the scoring are the harness's.

Usage: lmeval_mc.py GGUF_DIR GGUF_FILE MMLU_JSONL BATCH OUT.json
"""
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import types

# lm_eval 0.4.9.1 names `transformers.AutoModelForVision2Seq`, which transformers 5 removed:
# its multimodal model module (unused here) at import time, and a sanity check of the model
# class at call time. An empty stand-in for that one module, and a stand-in class with that
# name, let the harness run its text path unchanged.
sys.modules["lm_eval.models.hf_vlms"] = types.ModuleType("lm_eval.models.hf_vlms")
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
import transformers

transformers.AutoModelForVision2Seq = type("AutoModelForVision2Seq", (), {})

gdir, gfile, path, batch, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
qs = []
for line in open(path, encoding="utf-8-sig"):
    d = json.loads(line)
    if d["correct_answer"] == "answer":
        continue
    ctx = (
        f"The following are multiple choice questions (with answers) about {d['topic'].replace('_', ' ')}.\n\n"
        + d["question"].strip()
        + "".join(f"\n{l}. {d['answer_' + l.lower()]}" for l in "ABCD")
        + "\nAnswer:"
    )
    qs.append((ctx, "ABCD".index(d["correct_answer"].strip())))
t0 = time.time()
lm = HFLM(pretrained=gdir, gguf_file=gfile, dtype="float32", batch_size=batch, device="cpu")
load_s = time.time() - t0
reqs = [
    Instance(request_type="loglikelihood", doc={}, arguments=(ctx, " " + l), idx=k)
    for ctx, _ in qs
    for k, l in enumerate("ABCD")
]
t1 = time.time()
res = lm.loglikelihood(reqs, disable_tqdm=True)
score_s = time.time() - t1
acc = 0
lls = []
for i, (_, gold) in enumerate(qs):
    row = [res[4 * i + k][0] for k in range(4)]
    lls.append(row)
    acc += int(max(range(4), key=lambda j: (row[j], -j)) == gold)
json.dump(
    {"questions": len(qs), "acc": acc / len(qs), "acc_norm": acc / len(qs), "load_s": load_s,
     "score_s": score_s, "loglik": lls},
    open(out, "w"),
)
