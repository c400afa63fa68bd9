"""Greedy generation with transformers on the prompts `quern eval gen --details` saved, and
agreement with quern's answers.

    python benches/gsm8k/hf_compare.py MODEL.gguf DETAILS.jsonl [N] [OUT.jsonl]

Loads the GGUF with transformers (dequantized to fp32, as quern does), encodes each saved
prompt without special tokens (the chat template wrote them; for plain prompts pass
QUERN_ADD_SPECIAL=1 if the model adds a BOS), generates greedily up to the same budget,
stopping at the model's EOS or the harness's stop strings, and cuts the text before the stop
string as quern does. Prints how many of the first N answers are identical, and how many get
the same strict/flexible verdict.
"""
import json, os, re, sys, time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf, details = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else None
out_path = sys.argv[4] if len(sys.argv) > 4 else None
rows = [json.loads(l) for l in open(details)][:n]
d, f = os.path.split(os.path.abspath(gguf))
torch.set_grad_enabled(False)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32).eval()
stops = ["Question:", "</s>", "<|im_end|>"]
max_new = int(os.environ.get("MAX_NEW", "256"))
add_special = os.environ.get("QUERN_ADD_SPECIAL") == "1"

strict_re = re.compile(r"#### (\-?[0-9\.\,]+)")
flex_re = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
def norm(s):
    for r in [",", r"\$", r"(?s).*#### ", r"\.$"]:
        s = re.sub(r, "", s)
    s = s.lower()
    return re.sub(r"^(-?[0-9]+)\.0+$", r"\1", s)
def verdicts(text, target):
    m = strict_re.search(text)
    fl = flex_re.findall(text)
    s = m.group(1) if m else None
    x = (fl[-1][0] or fl[-1][1]) if fl else None
    return (s is not None and norm(s) == norm(target), x is not None and norm(x) == norm(target))

same = same_verdict = 0
hf_correct = [0, 0]
t0 = time.time()
gen_tokens = 0
out = []
for r in rows:
    ids = tok(r["prompt"], add_special_tokens=add_special, return_tensors="pt")["input_ids"]
    g = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
                       stop_strings=stops, tokenizer=tok, pad_token_id=tok.eos_token_id)
    new = g[0, ids.shape[1]:]
    if len(new) and new[-1].item() == tok.eos_token_id:
        new = new[:-1]
    gen_tokens += len(new)
    text = tok.decode(new, skip_special_tokens=True)
    cut = min([text.find(s) for s in stops if s in text], default=-1)
    if cut >= 0:
        text = text[:cut]
    v = verdicts(text, r["target"])
    hf_correct[0] += v[0]; hf_correct[1] += v[1]
    same += text == r["completion"]
    same_verdict += v == (r["strict_correct"], r["flexible_correct"])
    out.append({"line": r["line"], "prompt_tokens_hf": ids.shape[1], "prompt_tokens_quern": r["prompt_tokens"],
                "hf": text, "quern": r["completion"], "identical": text == r["completion"]})
secs = time.time() - t0
if out_path:
    with open(out_path, "w") as fh:
        fh.writelines(json.dumps(o) + "\n" for o in out)
print(json.dumps({"questions": len(rows), "identical_outputs": same, "same_verdicts": same_verdict,
                  "prompt_ids_same_length": sum(o["prompt_tokens_hf"] == o["prompt_tokens_quern"] for o in out),
                  "hf_strict_correct": hf_correct[0], "hf_flexible_correct": hf_correct[1],
                  "hf_generated_tokens": gen_tokens, "hf_seconds": round(secs, 1)}))
