"""Loads a directory `quern export --format hf` wrote, with transformers, as a user would.

Usage: hf_export.py TASK.json OUT.safetensors

TASK.json: {"tasks": [TASK...]}, each {"dir", "class", "ids": [[...]], "mask": [[...]] (optional), "types": [[...]]
(optional), "greedy": N with "greedy_prompt": [...] (optional: N greedy new tokens with
generate, written as greedy), "texts": [str...] (optional), "chat": [{"role", "content"}...] (optional)}.
A task {"gguf": FILE, ...} reads a GGUF file instead (see run_gguf). "class" picks the Auto class: "causal" (AutoModelForCausalLM), "seqcls"
(AutoModelForSequenceClassification), "base" (AutoModel), "mlm" (AutoModelForMaskedLM),
"pretraining" (BertForPreTraining). The script fails (exit 1) when:
  - model.safetensors lacks {"format": "pt"} metadata, or two of its tensors share bytes;
  - tie_word_embeddings disagrees with whether the output projection is in the file;
  - loading reports missing, unexpected or mismatched weights (BertModel's pooler aside);
  - config.json's architectures is not the class transformers built.
Writes, for task i, with the prefix t<i>_ (float32): logits (causal, seqcls, mlm: prediction logits), hidden (base:
last_hidden_state), nsp (pretraining: seq_relationship_logits); with "texts", text_<i> (int64
ids of AutoTokenizer); with "chat", chat (int64 ids of apply_chat_template(...,
add_generation_prompt=True)). Everything in fp32 on CPU, nothing from a hub.
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def fail(msg):
    print(f"hf_export.py: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    tasks = json.load(open(sys.argv[1]))["tasks"]
    out = {}
    for i, task in enumerate(tasks):
        for k, v in run(task).items():
            out[f"t{i}_{k}"] = v
    save_file(out, sys.argv[2])


def run_gguf(task):
    """A GGUF file as llama.cpp's Python reader and transformers' GGUF loader see it:
    {"gguf": path, "arch": "llama" (default) or "gpt2", "ids": [[...]] (optional), "texts": [...]
    (optional)} -> types (int64
    ggml type of each tensor, in file order), logits (transformers' model from the file, when
    "ids"), text_<i> (transformers' tokenizer from the file)."""
    import gguf

    r = gguf.GGUFReader(task["gguf"])
    arch = r.fields["general.architecture"].contents()
    if arch != task.get("arch", "llama"):
        fail(f"general.architecture is {arch}")
    out = {"types": torch.tensor([int(t.tensor_type) for t in r.tensors], dtype=torch.long)}
    d, name = os.path.split(task["gguf"])
    if "ids" in task:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, torch_dtype=torch.float32)
        model.eval()
        with torch.no_grad():
            ids = torch.tensor(task["ids"], dtype=torch.long)
            out["logits"] = model(ids).logits.contiguous()
    if "texts" in task:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
        for i, s in enumerate(task["texts"]):
            out[f"text_{i}"] = torch.tensor(tok(s, add_special_tokens=False)["input_ids"],
                                            dtype=torch.long)
    return out


def run(task):
    if "gguf" in task:
        return run_gguf(task)
    d = task["dir"]
    cls = task["class"]
    cfg = json.load(open(os.path.join(d, "config.json")))
    with safe_open(os.path.join(d, "model.safetensors"), framework="pt") as f:
        meta = f.metadata() or {}
        keys = list(f.keys())
        tensors = {k: f.get_tensor(k) for k in keys}
    if meta.get("format") != "pt":
        fail(f"metadata {meta} has no format=pt")
    ptrs = {}
    for k, t in tensors.items():
        if t.data_ptr() in ptrs and t.numel() > 0:
            fail(f"{k} aliases {ptrs[t.data_ptr()]}")
        ptrs[t.data_ptr()] = k
    tie = cfg.get("tie_word_embeddings", True)
    out_proj = [k for k in keys if k in ("lm_head.weight", "cls.predictions.decoder.weight")]
    if cls in ("causal", "mlm", "pretraining") and tie == bool(out_proj):
        fail(f"tie_word_embeddings={tie} but output projection in file: {out_proj}")

    import transformers
    from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM,
                              AutoModelForSequenceClassification, BertForPreTraining)

    auto = {
        "causal": AutoModelForCausalLM,
        "seqcls": AutoModelForSequenceClassification,
        "base": AutoModel,
        "mlm": AutoModelForMaskedLM,
        "pretraining": BertForPreTraining,
    }[cls]
    model, info = auto.from_pretrained(
        d, torch_dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    missing = [k for k in info["missing_keys"] if not (cls == "base" and k.startswith("pooler."))]
    for what, ks in [("missing", missing), ("unexpected", info["unexpected_keys"]),
                     ("mismatched", info["mismatched_keys"])]:
        if ks:
            fail(f"{what} weights when loading: {list(ks)[:5]}")
    if type(model).__name__ not in cfg["architectures"]:
        fail(f"transformers built {type(model).__name__}, config says {cfg['architectures']}")
    model.eval()
    out = {}
    with torch.no_grad():
        t = lambda k: torch.tensor(task[k], dtype=torch.long) if k in task else None
        kw = {"input_ids": t("ids")}
        if "mask" in task:
            kw["attention_mask"] = t("mask")
        if "types" in task:
            kw["token_type_ids"] = t("types")
        r = model(**kw)
        if cls == "base":
            out["hidden"] = r.last_hidden_state.float().contiguous()
        elif cls == "pretraining":
            out["logits"] = r.prediction_logits.float().contiguous()
            out["nsp"] = r.seq_relationship_logits.float().contiguous()
        else:
            out["logits"] = r.logits.float().contiguous()
        if "greedy" in task:
            n = task["greedy"]
            prompt = torch.tensor([task["greedy_prompt"]], dtype=torch.long)
            # Plain argmax for n tokens, never stopping (as quern's ignore_eos).
            model.generation_config.eos_token_id = None
            g = model.generate(prompt, max_new_tokens=n, do_sample=False,
                               attention_mask=torch.ones_like(prompt))
            out["greedy"] = g[0, prompt.shape[1]:].contiguous()
    if "texts" in task or "chat" in task:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(d)
        for i, s in enumerate(task.get("texts", [])):
            out[f"text_{i}"] = torch.tensor(tok(s, add_special_tokens=False)["input_ids"],
                                            dtype=torch.long)
        if "chat" in task:
            ids = tok.apply_chat_template(task["chat"], add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            out["chat"] = torch.tensor(ids, dtype=torch.long)
    return out


if __name__ == "__main__":
    main()
