"""Reference GRPO/RLOO loss computations in plain PyTorch, for tests/it/rl.rs.

Usage: rl_loss.py TASK.json OUT.safetensors

TASK.json: "logp", "old", "ref" (per-token log-probabilities, row-major of "shape" [B, L]),
"adv" ([B] advantages), "mask" ([B, L], 1 on completion tokens), "eps_low", "eps_high",
"beta", "max_len".

Written from the formulas (GRPO, DeepSeekMath; TRL's GRPOTrainer._compute_loss), not from
quern's code, in float64:
  ratio = exp(logp - old)
  per_token = -min(ratio * A, clamp(ratio, 1 - eps_low, 1 + eps_high) * A) + beta * k3
  k3 = exp(ref - logp) - (ref - logp) - 1
"token_mean": each sequence's masked token mean, then the mean over sequences (GRPO);
"constant": each sequence's masked sum / max_len, then the mean over sequences (Dr. GRPO).

Writes token_mean_loss, token_mean_grad (d loss / d logp), constant_loss, constant_grad,
kl_sum (masked sum of k3) and clipped (masked count of tokens where the clipped term is the
one taken: ratio < 1 - eps_low with A < 0, or ratio > 1 + eps_high with A > 0).
"""
import json
import sys

import torch
from safetensors.torch import save_file


def main():
    task = json.load(open(sys.argv[1]))
    b, l = task["shape"]
    t = lambda k: torch.tensor(task[k], dtype=torch.float64).view(b, l)
    old, ref, mask = t("old"), t("ref"), t("mask")
    adv = torch.tensor(task["adv"], dtype=torch.float64).view(b, 1)
    lo, hi, beta = task["eps_low"], task["eps_high"], task["beta"]
    out = {}
    for name in ["token_mean", "constant"]:
        logp = t("logp").requires_grad_(True)
        ratio = torch.exp(logp - old)
        unclipped = ratio * adv
        clipped = torch.clamp(ratio, 1 - lo, 1 + hi) * adv
        per_token = -torch.min(unclipped, clipped)
        kl = torch.exp(ref - logp) - (ref - logp) - 1
        per_token = per_token + beta * kl
        if name == "token_mean":
            per_seq = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)
        else:
            per_seq = (per_token * mask).sum(1) / task["max_len"]
        loss = per_seq.mean()
        loss.backward()
        out[f"{name}_loss"] = loss.detach().clone()
        out[f"{name}_grad"] = logp.grad.clone()
        out["kl_sum"] = (kl.detach() * mask).sum()
        is_low = (ratio < 1 - lo) & (adv < 0)
        is_high = (ratio > 1 + hi) & (adv > 0)
        out["clipped"] = ((is_low | is_high).double() * mask).sum().detach()
    save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[2])


if __name__ == "__main__":
    main()
