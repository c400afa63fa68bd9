"""Wanda pruning and GPTQ in plain PyTorch, on a Hugging Face Llama directory, for
`quern compress` to be checked against.

Usage: compress_ref.py TASK.json OUT.safetensors

TASK.json: {"dir": HF_DIR, "calib": [[ids...]...], "ops": [OP...]}; each OP is
  {"kind": "wanda", "sparsity": S, "pattern": "unstructured" | "2:4"}  (per-row comparison groups)
  {"kind": "gptq", "bits": 8 | 4, "group": G, "damp": D, "block": B,
   "act_order": false, "range": "minmax" | "search"}   (the last two optional)
  {"kind": "rtn", "bits": 4, "group": G, "range": "minmax" | "search"}
An OP with "sequential": true calibrates one decoder layer at a time, as the papers do:
layer l's statistics come from a run of the model whose layers 0..l-1 already hold their
op-i weights (a forward pass that stops at layer l + 1, hooks on layer l only); without it, one pass
of the unchanged model gives every layer's statistics.
The calibration statistics come from forward pre-hooks on the nn.Linear modules of the
decoder layers while transformers runs the calibration rows (fp32, causal, no padding):
the sum of x_j^2 per input feature (Wanda's ||X_j||, float64) and X^T X (GPTQ's
H = 2 X^T X / n; the product in float32, summed in float64).

Writes o<i>.<linear name> (float32): each layer's weight after op i (pruned, or quantized
and dequantized). Formulas (written from the papers, not from quern's code):
  Wanda: score |W_ij| * ||X_j||; the lowest floor(S * in) of each row go (2:4: the 2 lowest
  of every 4 consecutive inputs of a row).
  GPTQ: H += damp * mean(diag H) * I (a zero diagonal entry set to 1 first); U = upper
  Cholesky factor of H^-1; columns left to right in blocks; q = quant(w_col), err =
  (w_col - q) / U_cc, the block's later columns -= err * U_c,later, after the block the
  rest -= Err @ U_block,rest. int8: symmetric, scale max|row| / 127 from the start. int4:
  asymmetric min/max over each group of G inputs, taken from the updated weights when the
  column loop reaches the group (blocks are whole groups). act_order (the GPTQ code's
  --act-order with --static-groups): every group's min/max taken from the weights before
  any update, then columns handled in order of decreasing diag(H) (W's columns and H's rows
  and columns permuted alike; blocks of B permuted columns), each column rounded with its
  own group's parameters and written back to its place.
  range "search" (the GPTQ code's Quantizer with mse=True, grid of 40 steps of 0.02, norm
  2.4): for p = 1, 0.98, ..., 0.22 the range [p*min, p*max], keeping per row and group the
  first p with the smallest sum |w - q(w)|^2.4.
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


class Stop(Exception):
    """Raised by a hook to end a forward pass once the layers of interest have run."""


def collect(model, calib, prefix=".layers.", stop_at=None):
    """Input statistics of the decoder layers' linears whose name holds `prefix`; with
    `stop_at`, the pass ends when decoder layer `stop_at` is reached (later layers and the
    output projection would not change the statistics)."""
    stats = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and prefix in name:
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
    if stop_at is not None and stop_at < len(model.model.layers):
        def stop(m, inputs):
            raise Stop()
        hooks.append(model.model.layers[stop_at].register_forward_pre_hook(stop))
    with torch.no_grad():
        try:
            model(torch.tensor(calib, dtype=torch.long))
        except Stop:
            pass
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


def params(g, rng):
    """A group's (scale, min) per row, g: [n, len]."""
    mx, mn = g.amax(1), g.amin(1)
    s, m = ((mx - mn) / 15).clamp_min(EPS), mn
    if rng != "search":
        return s, m
    def err(s, m):
        q = ((g - m.view(-1, 1)) / s.view(-1, 1)).round().clamp(0, 15)
        return (q * s.view(-1, 1) + m.view(-1, 1) - g).abs().pow(2.4).sum(1)
    best = err(s, m)
    for i in range(1, 40):
        p = 1 - 0.02 * i
        s1, m1 = ((p * mx - p * mn) / 15).clamp_min(EPS), p * mn
        e = err(s1, m1)
        better = e < best
        s, m, best = torch.where(better, s1, s), torch.where(better, m1, m), torch.where(better, e, best)
    return s, m


def rtn4(w, group, rng):
    out = torch.zeros_like(w)
    for j in range(0, w.shape[1], group):
        g = w[:, j : j + group]
        s, m = params(g, rng)
        out[:, j : j + group] = ((g - m.view(-1, 1)) / s.view(-1, 1)).round().clamp(0, 15) * s.view(-1, 1) + m.view(-1, 1)
    return out


def gptq(w, gram, rows, bits, group, damp, block, act_order=False, rng="minmax"):
    w = w.clone().float()
    n, k = w.shape
    h = (gram * (2.0 / rows)).float()
    d = torch.diag(h).clone()
    d[d == 0] = 1.0
    h[range(k), range(k)] = d
    h[range(k), range(k)] += damp * torch.mean(torch.diag(h))
    perm = torch.arange(k)
    if act_order:
        static = [params(w[:, j : j + group], rng) for j in range(0, k, group)] if bits == 4 else None
        perm = torch.argsort(torch.diag(h), descending=True)
        w = w[:, perm]
        h = h[perm][:, perm]
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    u = torch.linalg.cholesky(hinv, upper=True)
    out = torch.zeros_like(w)
    if bits == 8:
        scale = (w.abs().amax(1) / 127).clamp_min(EPS)
        group = k
    elif not act_order:
        block = group * math.ceil(block / group)
    s = m = None
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if bits == 4 and act_order:
                s, m = static[int(perm[col]) // group]
            elif bits == 4 and col % group == 0:
                s, m = params(w1[:, i : i + min(group, k - col)], rng)
            wc = w1[:, i]
            if bits == 8:
                deq = (wc / scale).round().clamp(-127, 127) * scale
            else:
                deq = ((wc - m) / s).round().clamp(0, 15) * s + m
            out[:, int(perm[col])] = deq
            e = (wc - deq) / u1[i, i]
            w1[:, i + 1 :] -= e.view(-1, 1) @ u1[i, i + 1 :].view(1, -1)
            err1[:, i] = e
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    return out


def apply(op, w, st):
    if op["kind"] == "wanda":
        return wanda(w, st["sq"], op["sparsity"], op["pattern"])
    if op["kind"] == "rtn":
        return rtn4(w, op["group"], op.get("range", "minmax"))
    return gptq(w, st["gram"], st["n"], op["bits"], op["group"], op["damp"], op["block"],
                op.get("act_order", False), op.get("range", "minmax"))


def main():
    task = json.load(open(sys.argv[1]))
    model = AutoModelForCausalLM.from_pretrained(task["dir"], torch_dtype=torch.float32)
    model.eval()
    linears = {n: m for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and ".layers." in n}
    weights = {n: m.weight.detach().clone() for n, m in linears.items()}
    layers = len(model.model.layers)
    stats = collect(model, task["calib"])
    out = {}
    for i, op in enumerate(task["ops"]):
        if op.get("sequential"):
            for l in range(layers):
                prefix = f".layers.{l}."
                st = collect(model, task["calib"], prefix, stop_at=l + 1)
                for name in st:
                    r = apply(op, weights[name], st[name])
                    out[f"o{i}.{name}.weight"] = r.contiguous()
                    with torch.no_grad():
                        linears[name].weight.copy_(r)
            # Back to the source weights for the next op.
            with torch.no_grad():
                for name, m in linears.items():
                    m.weight.copy_(weights[name])
        else:
            for name, w in weights.items():
                out[f"o{i}.{name}.weight"] = apply(op, w, stats[name]).contiguous()
    save_file(out, sys.argv[2])


main()
