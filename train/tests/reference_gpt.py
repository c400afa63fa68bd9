#!/usr/bin/env python3
"""Plain-PyTorch twin of quern's transformer, for checking the trainer against PyTorch.

    reference_gpt.py CONFIG.json WEIGHTS.safetensors BATCH.safetensors OUT_GRADS.safetensors

CONFIG.json holds the model shape as quern resolved it (layers, heads, dim, hidden,
positions, norm, mlp, bias, tie_embeddings, rope_theta, causal). WEIGHTS holds quern's
initial parameters under quern's names; BATCH holds `input` and `targets` (int64, -100 =
ignored). The script computes the loss (mean over targets) and its gradients with
torch.nn.functional only, writes the gradients under the parameters' names, and prints
{"loss": ...}. safetensors is read and written by hand (the format is a length, a JSON
header and raw little-endian bytes) so the check needs nothing beyond torch.
"""
import json
import struct
import sys

import torch
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "I64": torch.int64, "I32": torch.int32, "BF16": torch.bfloat16, "F16": torch.float16}
NAMES = {v: k for k, v in DTYPES.items()}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(body[start:end]), dtype=DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"]).clone()
    return out


def write_safetensors(path, tensors):
    header, chunks, offset = {}, [], 0
    for name, t in tensors.items():
        b = t.detach().contiguous().cpu().numpy().tobytes()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        chunks.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(chunks))


def norm(cfg, w, x, name):
    if cfg["norm"] == "layernorm":
        return F.layer_norm(x, (x.shape[-1],), w[name + ".weight"], w.get(name + ".bias"), eps=1e-5)
    return F.rms_norm(x, (x.shape[-1],), w[name + ".weight"], eps=1e-6)


def linear(w, x, name):
    return F.linear(x, w[name + ".weight"], w.get(name + ".bias"))


def rotary(x, theta):
    t, hd = x.shape[-2], x.shape[-1]
    inv = torch.exp(torch.arange(0, hd, 2, dtype=torch.float32) / hd * -torch.log(torch.tensor(theta)))
    freqs = torch.outer(torch.arange(t, dtype=torch.float32), inv)
    emb = torch.cat([freqs, freqs], -1)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return x * emb.cos() + torch.cat([-x2, x1], -1) * emb.sin()


def forward(cfg, w, idx):
    b, t = idx.shape
    d, h = cfg["dim"], cfg["heads"]
    x = F.embedding(idx, w["tok_emb.weight"])
    if cfg["positions"] == "learned":
        x = x + w["pos_emb.weight"][:t]
    for i in range(cfg["layers"]):
        p = f"blocks.{i}"
        q, k, v = linear(w, norm(cfg, w, x, p + ".ln1"), p + ".attn.qkv").split(d, dim=2)
        q, k, v = (z.view(b, t, h, d // h).transpose(1, 2) for z in (q, k, v))
        if cfg["positions"] == "rotary":
            q, k = rotary(q, cfg["rope_theta"]), rotary(k, cfg["rope_theta"])
        y = F.scaled_dot_product_attention(q, k, v, is_causal=cfg["causal"])
        x = x + linear(w, y.transpose(1, 2).reshape(b, t, d), p + ".attn.proj")
        hdn = norm(cfg, w, x, p + ".ln2")
        if cfg["mlp"] == "gelu":
            m = F.gelu(linear(w, hdn, p + ".mlp.fc"), approximate="tanh")
        else:
            m = F.silu(linear(w, hdn, p + ".mlp.gate")) * linear(w, hdn, p + ".mlp.up")
        x = x + linear(w, m, p + ".mlp.out")
    x = norm(cfg, w, x, "ln_f")
    return F.linear(x, w["lm_head.weight"] if "lm_head.weight" in w else w["tok_emb.weight"])


def main():
    cfg = json.load(open(sys.argv[1]))
    w = read_safetensors(sys.argv[2])
    for t in w.values():
        t.requires_grad_(True)
    batch = read_safetensors(sys.argv[3])
    logits = forward(cfg, w, batch["input"])
    loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), batch["targets"].view(-1), ignore_index=-100)
    loss.backward()
    write_safetensors(sys.argv[4], {n: t.grad for n, t in w.items()})
    print(json.dumps({"loss": loss.item()}))


if __name__ == "__main__":
    main()
