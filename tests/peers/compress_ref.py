"""Wanda pruning and GPTQ in plain PyTorch, on a Hugging Face Llama directory, for
`quern compress` to be checked against.

Usage: compress_ref.py TASK.json OUT.safetensors

TASK.json: {"dir": HF_DIR, "calib": [[ids...]...], "ops": [OP...]}; each OP is
  {"kind": "wanda", "sparsity": S, "pattern": "unstructured" | "2:4"}  (per-row comparison groups)
  {"kind": "gptq", "bits": 8 | 4, "group": G, "damp": D, "block": B}
The calibration statistics come from forward pre-hooks on every nn.Linear of the decoder
layers while transformers runs the calibration rows (fp32, causal, no padding): the sum of
x_j^2 per input feature (Wanda's ||X_j||, float64) and X^T X (GPTQ's H = 2 X^T X / n;
the product in float32, summed in float64).

Writes o<i>.<linear name> (float32): each layer's weight after op i (pruned, or quantized
and dequantized). Formulas (written from the papers, not from quern's code):
  Wanda: score |W_ij| * ||X_j||; the lowest floor(S * in) of each row go (2:4: the 2 lowest
  of every 4 consecutive inputs of a row).
  GPTQ: H += damp * mean(diag H) * I (a zero diagonal entry set to 1 first); U = upper
  Cholesky factor of H^-1; columns left to right in blocks; q = quant(w_col), err =
  (w_col - q) / U_cc, the block's later columns -= err * U_c,later, after the block the
  rest -= Err @ U_block,rest. int8: symmetric, scale max|row| / 127 from the start. int4:
  asymmetric min/max over each group of G inputs, taken from the updated weights when the
  column loop reaches the group (blocks are whole groups).
"""
import json
import math
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

EPS = 1e-8


def collect(model, calib):
    stats = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and ".layers." in name:
            k = mod.in_features
            stats[name] = {
                "sq": torch.zeros(k, dtype=torch.float64),
                "gram": torch.zeros(k, k, dtype=torch.float64),
                "n": 0,
            }

            def hook(m, inputs, name=name):
                x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
                s = stats[name]
                s["sq"] += (x.double() * x.double()).sum(0)
                s["gram"] += (x.T @ x).double()
                s["n"] += x.shape[0]

            hooks.append(mod.register_forward_pre_hook(hook))
    with torch.no_grad():
        model(torch.tensor(calib, dtype=torch.long))
    for h in hooks:
        h.remove()
    return stats


def wanda(w, sq, sparsity, pattern):
    score = w.abs() * sq.sqrt().float().view(1, -1)
    n, k = w.shape
    keep = torch.ones_like(w, dtype=torch.bool)
    if pattern == "2:4":
        g = score.view(n, k // 4, 4)
        idx = g.argsort(dim=-1)[..., :2]
        keep = keep.view(n, k // 4, 4).scatter(-1, idx, False).view(n, k)
    else:
        cut = int(math.floor(sparsity * k))
        idx = score.argsort(dim=1)[:, :cut]
        keep = keep.scatter(1, idx, False)
    return w * keep


def gptq(w, gram, rows, bits, group, damp, block):
    w = w.clone().float()
    n, k = w.shape
    h = (gram * (2.0 / rows)).float()
    d = torch.diag(h).clone()
    d[d == 0] = 1.0
    h[range(k), range(k)] = d
    h[range(k), range(k)] += damp * torch.mean(torch.diag(h))
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    u = torch.linalg.cholesky(hinv, upper=True)
    out = torch.zeros_like(w)
    if bits == 8:
        scale = (w.abs().amax(1) / 127).clamp_min(EPS)
        group = k
    else:
        block = group * math.ceil(block / group)
    s = m = None
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if bits == 4 and col % group == 0:
                g = w1[:, i : i + min(group, k - col)]
                mx, mn = g.amax(1), g.amin(1)
                s, m = ((mx - mn) / 15).clamp_min(EPS), mn
            wc = w1[:, i]
            if bits == 8:
                deq = (wc / scale).round().clamp(-127, 127) * scale
            else:
                deq = ((wc - m) / s).round().clamp(0, 15) * s + m
            out[:, col] = deq
            e = (wc - deq) / u1[i, i]
            w1[:, i + 1 :] -= e.view(-1, 1) @ u1[i, i + 1 :].view(1, -1)
            err1[:, i] = e
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    return out


def main():
    task = json.load(open(sys.argv[1]))
    model = AutoModelForCausalLM.from_pretrained(task["dir"], torch_dtype=torch.float32)
    model.eval()
    stats = collect(model, task["calib"])
    weights = {n: m.weight.detach().clone() for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and ".layers." in n}
    out = {}
    for i, op in enumerate(task["ops"]):
        for name, w in weights.items():
            st = stats[name]
            if op["kind"] == "wanda":
                r = wanda(w, st["sq"], op["sparsity"], op["pattern"])
            else:
                r = gptq(w, st["gram"], st["n"], op["bits"], op["group"], op["damp"], op["block"])
            out[f"o{i}.{name}.weight"] = r.contiguous()
    save_file(out, sys.argv[2])


main()
