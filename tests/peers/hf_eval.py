"""Reference evaluation with Hugging Face transformers and plain PyTorch, for `quern eval`'s tests
and benchmarks.

Usage: hf_eval.py TASK.json OUT.json

TASK.json: {"dir", "file"} (a GGUF model, loaded by transformers in fp32), and any of
  - "mc": [{"path", "format": "mmlu"|"plain", "shots", "limit"}, ...]: log-likelihood of every choice
    of every question, computed as lm-evaluation-harness does (written here from its
    description, independently of quern): the MMLU prompt of the harness's `mmlu` task, few-shot
    examples = the first k other questions of the same subject (MMLU) or file (plain),
    `_encode_pair` (trailing whitespace of the context moves to the continuation; the
    continuation is what follows the context's own encoding in the encoding of the whole),
    no special tokens, one forward pass per distinct model input, no batching.
  - "split": a tokenized split directory: every row's per-target negative log-likelihood
    (`tokens[1:]` given `tokens[:-1]`), torch.nn.functional.cross_entropy on the model's
    logits, for every position (padding included; the caller decides what counts).
Writes {"mc": [{"loglik": [[...]], "gold": [...], "acc", "acc_norm", "seconds"}, ...],
        "split": {"nll": [[...]], "seconds"}}.
"""
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
import torch.nn.functional as F


def load_questions(path, fmt):
    qs = []
    for line in open(path, encoding="utf-8-sig"):
        if not line.strip():
            continue
        d = json.loads(line)
        if fmt == "mmlu":
            if d["correct_answer"] == "answer":
                continue
            text = (
                d["question"].strip()
                + "".join(f"\n{l}. {d['answer_' + l.lower()]}" for l in "ABCD")
                + "\nAnswer:"
            )
            qs.append(
                {
                    "text": text,
                    "choices": list("ABCD"),
                    "gold": "ABCD".index(d["correct_answer"].strip()),
                    "subject": d["topic"].replace("_", " "),
                }
            )
        else:
            q = d.get("question", d.get("context"))
            g = d["gold"]
            gold = g if isinstance(g, int) else d["choices"].index(g)
            qs.append({"text": q, "choices": d["choices"], "gold": gold, "subject": None})
    return qs


def context(qs, i, shots, fmt):
    q = qs[i]
    ctx = ""
    if fmt == "mmlu":
        ctx = f"The following are multiple choice questions (with answers) about {q['subject']}.\n\n"
    ex = [e for j, e in enumerate(qs) if j != i and (fmt != "mmlu" or e["subject"] == q["subject"])]
    for e in ex[:shots]:
        ctx += e["text"] + " " + e["choices"][e["gold"]] + "\n\n"
    return ctx + q["text"]


def encode_pair(tok, ctx, cont):
    n = len(ctx) - len(ctx.rstrip())
    if n > 0:
        cont = ctx[-n:] + cont
        ctx = ctx[:-n]
    whole = tok(ctx + cont, add_special_tokens=False)["input_ids"]
    c = tok(ctx, add_special_tokens=False)["input_ids"]
    return c, whole[len(c):]


def run_mc(model, tok, t):
    qs = load_questions(t["path"], t["format"])
    n_run = min(t["limit"], len(qs)) if t.get("limit") else len(qs)
    t0 = time.time()
    lls, acc, acc_norm, gold = [], 0, 0, []
    max_len = model.config.max_position_embeddings
    cache = {}
    for i in range(n_run):
        ctx = context(qs, i, t.get("shots", 0), t["format"])
        row = []
        for ch in qs[i]["choices"]:
            c, k = encode_pair(tok, ctx, " " + ch)
            whole = (c + k)[-(max_len + 1):]
            key = tuple(whole[:-1])
            if key not in cache:
                x = torch.tensor([whole[:-1]])
                cache = {key: F.log_softmax(model(x).logits[0].float(), dim=-1)}
            logp = cache[key]
            n = len(k)
            tgt = torch.tensor(whole[-n:])
            row.append(float(logp[-n:].gather(1, tgt[:, None]).sum()))
        lls.append(row)
        g = qs[i]["gold"]
        gold.append(g)
        acc += int(max(range(len(row)), key=lambda j: (row[j], -j)) == g)
        normed = [l / len(ch) for l, ch in zip(row, qs[i]["choices"])]
        acc_norm += int(max(range(len(row)), key=lambda j: (normed[j], -j)) == g)
    n = max(len(lls), 1)
    return {"loglik": lls, "gold": gold, "acc": acc / n, "acc_norm": acc_norm / n,
            "seconds": time.time() - t0}


def main():
    task = json.load(open(sys.argv[1]))
    out = {}
    torch.set_grad_enabled(False)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        task["dir"], gguf_file=task["file"], torch_dtype=torch.float32
    )
    model.eval()
    if "threads" in task:
        torch.set_num_threads(task["threads"])
    if "mc" in task:
        tok = AutoTokenizer.from_pretrained(task["dir"], gguf_file=task["file"])
        out["mc"] = [run_mc(model, tok, t) for t in task["mc"]]
    if "split" in task:
        import pyarrow.parquet as pq

        d = task["split"]
        meta = json.load(open(os.path.join(d, "meta.json")))
        t0 = time.time()
        nll = []
        for s in meta["shards"]:
            for toks in pq.read_table(os.path.join(d, s["file"])).column("tokens").to_pylist():
                x = torch.tensor([toks[:-1]])
                y = torch.tensor(toks[1:])
                logits = model(x).logits[0].float()
                nll.append(F.cross_entropy(logits, y, reduction="none").tolist())
        out["split"] = {"nll": nll, "seconds": time.time() - t0}
    json.dump(out, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()
