"""Reference computations with Hugging Face transformers, for quern's model tests.

Usage: hf_models.py TASK.json OUT.safetensors

TASK.json holds {"kind": ..., ...}:
  - "llama_gguf": {"dir", "file", "ids": [[...]], "greedy": [[ids...]], "new_tokens": N,
                   "texts": [str...]}: logits of `ids` (one row each) from LlamaForCausalLM
    loaded from the GGUF, greedy continuations (with the KV cache) of each `greedy` prompt,
    and the ids transformers' tokenizer (built from the same GGUF) gives each of `texts`.
  - "llama_hf_tiny": {"dir", "ids", "tie", "each"}: a random tiny LlamaForCausalLM
    (grouped-query attention) saved to `dir` with save_pretrained, its logits on `ids`, and
    (optional) the logits of each sequence of `each` run alone (each_<i>).
  - "bert": {"dir", "ids": [[...]], "mask": [[...]], "types": [[...]]}: BertModel's
    last_hidden_state.
Writes tensors: logits_<i>, greedy_<i>, text_<i> (int64 ids), hidden (float32).
Everything in fp32 on CPU, nothing from a hub (HF_HUB_OFFLINE=1).
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from safetensors.torch import save_file


def main():
    task = json.load(open(sys.argv[1]))
    out = {}
    torch.set_grad_enabled(False)
    if task["kind"] == "llama_gguf":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(
            task["dir"], gguf_file=task["file"], torch_dtype=torch.float32
        )
        model.eval()
        for i, ids in enumerate(task.get("ids", [])):
            x = torch.tensor([ids], dtype=torch.long)
            out[f"logits_{i}"] = model(x).logits[0].contiguous()
        for i, ids in enumerate(task.get("greedy", [])):
            x = torch.tensor([ids], dtype=torch.long)
            g = model.generate(
                x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=task["new_tokens"],
                do_sample=False,
                min_new_tokens=task["new_tokens"],
                use_cache=True,
                eos_token_id=None,
                pad_token_id=0,
            )
            out[f"greedy_{i}"] = g[0, len(ids):].contiguous()
        if task.get("texts"):
            tok = AutoTokenizer.from_pretrained(task["dir"], gguf_file=task["file"])
            for i, t in enumerate(task["texts"]):
                out[f"text_{i}"] = torch.tensor(
                    tok(t, add_special_tokens=True)["input_ids"] or [-1], dtype=torch.long
                )
    elif task["kind"] == "llama_hf_tiny":
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        cfg = LlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=80, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            rope_theta=50000.0, rms_norm_eps=1e-5, tie_word_embeddings=task.get("tie", False),
        )
        model = LlamaForCausalLM(cfg)
        # Nonzero norms so that they are really checked.
        for n, p in model.named_parameters():
            if "norm" in n:
                p.data.uniform_(0.5, 1.5)
        model.eval()
        model.save_pretrained(task["dir"], safe_serialization=True)
        x = torch.tensor(task["ids"], dtype=torch.long)
        out["logits"] = model(x).logits.contiguous()
        for i, ids in enumerate(task.get("each", [])):
            out[f"each_{i}"] = model(torch.tensor([ids], dtype=torch.long)).logits[0].contiguous()
    elif task["kind"] == "bert":
        from transformers import BertModel

        model = BertModel.from_pretrained(task["dir"], torch_dtype=torch.float32, attn_implementation="eager")
        model.eval()
        ids = torch.tensor(task["ids"], dtype=torch.long)
        mask = torch.tensor(task["mask"], dtype=torch.long)
        types = torch.tensor(task["types"], dtype=torch.long)
        out["hidden"] = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state.contiguous()
    else:
        raise SystemExit(f"unknown task kind {task['kind']}")
    save_file(out, sys.argv[2])


if __name__ == "__main__":
    main()
