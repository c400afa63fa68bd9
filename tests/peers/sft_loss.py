"""Reference SFT loss with Hugging Face transformers and plain PyTorch, for `quern train`'s sft
tests.

Usage: sft_loss.py TASK.json OUT.json

TASK.json: {"dir", "file"} (a GGUF model, loaded by transformers in fp32), "split" (an sft split
directory as `quern tokenize --objective sft` writes it) and "conversations" (the split's
conversations in row order, each a list of {"role", "content"}).

For each row (input_ids, loss_mask), written here from the definition of the objective and
independently of quern: logits = model(input_ids[:-1]); the target at position t is
input_ids[t + 1], counted where loss_mask[t + 1] == 1; the loss is the summed cross-entropy of
the counted targets divided by their number over all rows.

For each conversation (up to its last assistant turn), `tokenizer.apply_chat_template` with
tokenize=True, and the text of every maximal run of loss_mask == 1 of its row.

Writes {"loss", "count", "template_ids": [[...]], "trained_text": [[...]]}.
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
import torch.nn.functional as F


def main():
    task = json.load(open(sys.argv[1]))
    torch.set_grad_enabled(False)
    import pyarrow.parquet as pq
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        task["dir"], gguf_file=task["file"], torch_dtype=torch.float32
    )
    model.eval()
    tok = AutoTokenizer.from_pretrained(task["dir"], gguf_file=task["file"])
    d = task["split"]
    meta = json.load(open(os.path.join(d, "meta.json")))
    rows = []
    for s in meta["shards"]:
        t = pq.read_table(os.path.join(d, s["file"]))
        rows += list(zip(t.column("input_ids").to_pylist(), t.column("loss_mask").to_pylist()))
    total, count, trained_text = 0.0, 0, []
    for ids, mask in rows:
        x = torch.tensor([ids[:-1]])
        y = torch.tensor(ids[1:])
        keep = torch.tensor(mask[1:]) == 1
        logits = model(x).logits[0].float()
        total += float(F.cross_entropy(logits[keep], y[keep], reduction="sum"))
        count += int(keep.sum())
        runs, cur = [], []
        for i, m in zip(ids, mask):
            if m == 1:
                cur.append(i)
            elif cur:
                runs.append(cur)
                cur = []
        if cur:
            runs.append(cur)
        trained_text.append([tok.decode(r) for r in runs])
    template_ids = []
    for conv in task["conversations"]:
        last = max(i for i, m in enumerate(conv) if m["role"] == "assistant")
        out = tok.apply_chat_template(conv[: last + 1], tokenize=True)
        if isinstance(out, dict) or hasattr(out, "input_ids"):
            out = out["input_ids"]
        template_ids.append(list(out))
    json.dump(
        {
            "loss": total / max(count, 1),
            "count": count,
            "template_ids": template_ids,
            "trained_text": trained_text,
        },
        open(sys.argv[2], "w"),
    )


if __name__ == "__main__":
    main()
