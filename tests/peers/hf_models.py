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
  - "bert_pretraining_tiny": {"dir", "ids", "mask", "types", "labels", "next"}: a random tiny
    BertForPreTraining (every weight, norm and bias drawn, so all are checked) saved to `dir`
    with save_pretrained (safetensors); its prediction_logits, seq_relationship_logits and
    loss with `labels` (-100 = not masked) and `next_sentence_label`, and the gradients of
    that loss for a few weights (grad_<name>).
Writes tensors: logits_<i>, greedy_<i>, text_<i> (int64 ids), hidden (float32),
mlm_logits, nsp_logits, loss, grad_* (float32).
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
    elif task["kind"] == "bert_pretraining_tiny":
        from transformers import BertConfig, BertForPreTraining

        torch.manual_seed(0)
        cfg = BertConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=48, max_position_embeddings=40, type_vocab_size=2,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=1e-12,
            hidden_act="gelu",
        )
        model = BertForPreTraining(cfg)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "LayerNorm.weight" in n:
                    p.uniform_(0.5, 1.5)
                elif n.endswith("bias"):
                    p.normal_(0.0, 0.1)
                else:
                    p.normal_(0.0, 0.15)
        model.eval()
        model.save_pretrained(task["dir"], safe_serialization=True)
        t = lambda k: torch.tensor(task[k], dtype=torch.long)
        torch.set_grad_enabled(True)
        o = model(
            input_ids=t("ids"), attention_mask=t("mask"), token_type_ids=t("types"),
            labels=t("labels"), next_sentence_label=t("next"),
        )
        o.loss.backward()
        out["mlm_logits"] = o.prediction_logits.detach().contiguous()
        out["nsp_logits"] = o.seq_relationship_logits.detach().contiguous()
        out["loss"] = o.loss.detach().reshape(1)
        named = dict(model.named_parameters())
        for n in [
            "cls.predictions.transform.dense.weight",
            "cls.predictions.transform.LayerNorm.weight",
            "bert.embeddings.word_embeddings.weight",
            "bert.embeddings.token_type_embeddings.weight",
            "bert.pooler.dense.weight",
            "cls.seq_relationship.weight",
            "bert.encoder.layer.0.attention.self.query.weight",
        ]:
            out["grad_" + n] = named[n].grad.detach().contiguous()
        bias = named.get("cls.predictions.bias", named.get("cls.predictions.decoder.bias"))
        out["grad_cls.predictions.bias"] = bias.grad.detach().contiguous()
    else:
        raise SystemExit(f"unknown task kind {task['kind']}")
    save_file(out, sys.argv[2])


if __name__ == "__main__":
    main()
