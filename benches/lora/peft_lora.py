"""The peer of quern's LoRA fine-tuning: transformers + peft on the same model, shards and
hyperparameters (benches/lora/compare.sh runs both).

Usage: peft_lora.py --gguf FILE --data SPLIT_DIR [--steps 20] [--batch 4] [--threads 2]

SmolLM2 loaded from its GGUF in fp32; LoRA r=8, alpha=16, dropout 0 on q/k/v/o/gate/up/down
(quern's all-linear); AdamW lr 1e-3 (betas 0.9/0.95, eps 1e-8, weight decay 0.1), 2 warmup
steps then cosine to lr/10 at the last step, gradient clipping at 1.0; micro-batches of
`batch` packed rows (65 ids: 64 inputs, 64 targets) in file order. Prints JSON: per-step
seconds and losses.
"""
import argparse
import glob
import json
import math
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pyarrow.parquet as pq
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    d, f = os.path.split(os.path.abspath(a.gguf))
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    cfg = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    model = get_peft_model(model, cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    warm, min_lr = 2, a.lr / 10

    def lr_at(step):
        if step < warm:
            return a.lr * (step + 1) / warm
        p = min(max((step - warm) / max(a.steps - warm, 1), 0.0), 1.0)
        return min_lr + 0.5 * (1 + math.cos(math.pi * p)) * (a.lr - min_lr)

    rows = []
    for path in sorted(glob.glob(os.path.join(a.data, "*.parquet"))):
        rows += pq.read_table(path, columns=["tokens"]).column("tokens").to_pylist()
    times, losses = [], []
    for step in range(a.steps):
        t0 = time.perf_counter()
        lo = (step * a.batch) % (len(rows) - a.batch)
        x = torch.tensor(rows[lo:lo + a.batch], dtype=torch.long)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    trainable = sum(p.numel() for p in params)
    json.dump({"step_s": times, "losses": losses, "trainable": trainable,
               "tokens_per_step": a.batch * (len(rows[0]) - 1)}, sys.stdout)


if __name__ == "__main__":
    main()
