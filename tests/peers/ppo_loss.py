"""Reference PPO computations in plain PyTorch, for tests/it/rl.rs.

Usage: ppo_loss.py TASK.json OUT.safetensors

TASK.json: "logp", "old", "ref", "values", "old_values", "mask" (row-major [B, L] of "shape":
current and stored log-probabilities of the completion tokens, the reference's, current
and stored values, 1 on completion tokens), "scores" ([B]), "beta", "gamma", "lam",
"eps_low", "eps_high", "clip_value", "vf_coef".

Written from the formulas as TRL's PPOTrainer lays them out (per-token KL penalty, the score
added at the last response token, GAE as a reversed loop over all positions with the stored
values and rewards zeroed off the mask, masked whitening with Bessel's correction, token-mean
policy and clipped value losses), not from quern's code, in float64:
  rewards_t = -beta * (old_t - ref_t) on the mask;  rewards[last] += score
  delta_t   = rewards_t + gamma * V_{t+1} - V_t;  A_t = delta_t + gamma * lam * A_{t+1}
  returns   = A + V;  A_w = (A - mean) * rsqrt(var + 1e-8) over the mask
  pg        = masked_mean(max(-A_w * ratio, -A_w * clamp(ratio, 1 - eps_low, 1 + eps_high)))
  vf        = 0.5 * masked_mean(max((v - R)^2, (clamp(v, V - c, V + c) - R)^2))
  loss      = pg + vf_coef * vf

Writes advantages (whitened, 0 off the mask), returns (on the mask), loss, logp_grad and
values_grad (d loss / d logp and d loss / d values), vf_loss and vf_clipped (masked count of
tokens whose clipped value term is the larger).
"""
import json
import sys

import torch
from safetensors.torch import save_file


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum()


def main():
    task = json.load(open(sys.argv[1]))
    b, l = task["shape"]
    t = lambda k: torch.tensor(task[k], dtype=torch.float64).view(b, l)
    old, ref, mask = t("old"), t("ref"), t("mask")
    old_values = t("old_values") * mask
    beta, gamma, lam = task["beta"], task["gamma"], task["lam"]
    rewards = -beta * (old - ref) * mask
    for row, score in enumerate(task["scores"]):
        last = int(mask[row].nonzero().max())
        rewards[row, last] += score
    lastgaelam = torch.zeros(b, dtype=torch.float64)
    reversed_adv = []
    for i in reversed(range(l)):
        nextvalues = old_values[:, i + 1] if i < l - 1 else torch.zeros(b, dtype=torch.float64)
        delta = rewards[:, i] + gamma * nextvalues - old_values[:, i]
        lastgaelam = delta + gamma * lam * lastgaelam
        reversed_adv.append(lastgaelam)
    adv = torch.stack(reversed_adv[::-1], dim=1)
    returns = (adv + old_values) * mask
    mean = masked_mean(adv, mask)
    var = masked_mean((adv - mean) ** 2, mask) * mask.sum() / (mask.sum() - 1)
    adv = (adv - mean) * torch.rsqrt(var + 1e-8) * mask

    logp = t("logp").requires_grad_(True)
    values = t("values").requires_grad_(True)
    ratio = torch.exp(logp - old)
    lo, hi = task["eps_low"], task["eps_high"]
    pg = masked_mean(torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - lo, 1 + hi)), mask)
    c = task["clip_value"]
    clipped_v = torch.clamp(values, old_values - c, old_values + c)
    vf1 = (values - returns) ** 2
    vf2 = (clipped_v - returns) ** 2
    vf = 0.5 * masked_mean(torch.max(vf1, vf2), mask)
    loss = pg + task["vf_coef"] * vf
    loss.backward()
    out = {
        "advantages": adv,
        "returns": returns,
        "loss": loss.detach().clone(),
        "logp_grad": logp.grad.clone(),
        "values_grad": values.grad.clone(),
        "vf_loss": vf.detach().clone(),
        "vf_clipped": ((vf2 > vf1).double() * mask).sum().detach(),
    }
    save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[2])


if __name__ == "__main__":
    main()
