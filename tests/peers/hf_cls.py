"""Reference classification logits and loss with Hugging Face transformers, for the cls tests.

Usage: hf_cls.py TASK.json OUT.safetensors

TASK.json:
  "kind": "llama" (SmolLM2 from a GGUF file: "dir", "file") or "bert" (a Hugging Face
          directory: "dir"),
  "head": a safetensors file with quern's head weights (head.out.weight, and for bert
          head.out.bias, head.pooler.weight, head.pooler.bias),
  "ids", "mask": right-padded rows and their attention masks,
  "labels": one class id per row, "pad_id": the padding id in "ids".

The model is `LlamaForSequenceClassification` / `BertForSequenceClassification` with
num_labels from the head, and its `score` / `pooler.dense` + `classifier` set to quern's
head weights: transformers' own pooling (the last non-pad token for Llama; [CLS] through the
pooler for BERT) and its cross-entropy (mean over rows).

Writes {"logits": [B, num_labels], "loss": []} (float32).
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from safetensors.torch import load_file, save_file


def main():
    task = json.load(open(sys.argv[1]))
    torch.set_grad_enabled(False)
    head = load_file(task["head"])
    n = head["head.out.weight"].shape[0]
    ids = torch.tensor(task["ids"])
    mask = torch.tensor(task["mask"])
    labels = torch.tensor(task["labels"])
    if task["kind"] == "llama":
        from transformers import LlamaForSequenceClassification

        model = LlamaForSequenceClassification.from_pretrained(
            task["dir"], gguf_file=task["file"], num_labels=n, torch_dtype=torch.float32
        )
        model.config.pad_token_id = task["pad_id"]
        model.score.weight.copy_(head["head.out.weight"])
    else:
        from transformers import BertForSequenceClassification

        model = BertForSequenceClassification.from_pretrained(
            task["dir"], num_labels=n, torch_dtype=torch.float32
        )
        model.bert.pooler.dense.weight.copy_(head["head.pooler.weight"])
        model.bert.pooler.dense.bias.copy_(head["head.pooler.bias"])
        model.classifier.weight.copy_(head["head.out.weight"])
        model.classifier.bias.copy_(head["head.out.bias"])
    model.eval()
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    save_file(
        {
            "logits": out.logits.float().contiguous(),
            "loss": out.loss.float().reshape([]).contiguous(),
        },
        sys.argv[2],
    )


if __name__ == "__main__":
    main()
