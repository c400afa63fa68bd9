"""LoRA in plain PyTorch on a Hugging Face Llama, for quern's LoRA tests.

Usage: hf_lora.py TASK.json OUT.safetensors

TASK.json: {"dir": a Hugging Face Llama directory, "adapters": a safetensors file of quern's
adapter tensors (blocks.{i}.attn.q.lora_a [r, in], blocks.{i}.attn.q.lora_b [out, r], ...),
"scale": alpha / rank, "ids": [[...]]}.

Loads the model with transformers, replaces the forward of every adapted projection
(q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj of layer i) by
x @ W.T + scale * (x @ A.T) @ B.T, and writes the logits without (`base`) and with (`lora`)
the adapters. Then, with "rank" and "alpha" in the task, the same adapters go into a fresh
copy through Hugging Face `peft` (LoraConfig on those modules, its lora_A/lora_B weights
set to A and B): its logits (`peft`), and the weights `merge_and_unload` folds
(`merged.<module>`, e.g. `merged.model.layers.0.self_attn.q_proj.weight`). fp32 on CPU,
nothing from a hub.
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from safetensors.torch import load_file, save_file

# quern's layer names -> the Hugging Face Llama module of each layer.
MODULES = {
    "attn.q": "self_attn.q_proj",
    "attn.k": "self_attn.k_proj",
    "attn.v": "self_attn.v_proj",
    "attn.proj": "self_attn.o_proj",
    "mlp.gate": "mlp.gate_proj",
    "mlp.up": "mlp.up_proj",
    "mlp.out": "mlp.down_proj",
}


def main():
    task = json.load(open(sys.argv[1]))
    torch.set_grad_enabled(False)
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(task["dir"], torch_dtype=torch.float32)
    model.eval()
    ids = torch.tensor(task["ids"], dtype=torch.long)
    out = {"base": model(ids).logits.contiguous()}
    adapters = load_file(task["adapters"])
    scale = float(task["scale"])
    patched = 0
    for name in sorted(adapters):
        if not name.endswith(".lora_a"):
            continue
        prefix = name[: -len(".lora_a")]
        parts = prefix.split(".")
        layer = int(parts[1])
        module = model.model.layers[layer].get_submodule(MODULES[".".join(parts[2:])])
        a = adapters[prefix + ".lora_a"]
        b = adapters[prefix + ".lora_b"]
        w = module.weight
        assert module.bias is None

        def forward(x, w=w, a=a, b=b):
            return x @ w.T + scale * (x @ a.T) @ b.T

        module.forward = forward
        patched += 1
    assert patched * 2 == len(adapters), "every adapter tensor used"
    out["lora"] = model(ids).logits.contiguous()
    if "rank" in task:
        out.update(with_peft(task, ids, adapters))
    save_file(out, sys.argv[2])


def with_peft(task, ids, adapters):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    base = LlamaForCausalLM.from_pretrained(task["dir"], torch_dtype=torch.float32)
    targets = sorted({MODULES[".".join(n.split(".")[2:-1])].split(".")[-1] for n in adapters})
    cfg = LoraConfig(r=task["rank"], lora_alpha=task["alpha"], lora_dropout=0.0, target_modules=targets)
    model = get_peft_model(base, cfg)
    model.eval()
    set_ = 0
    for name in sorted(adapters):
        if not name.endswith(".lora_a"):
            continue
        prefix = name[: -len(".lora_a")]
        parts = prefix.split(".")
        module = model.base_model.model.model.layers[int(parts[1])].get_submodule(
            MODULES[".".join(parts[2:])]
        )
        module.lora_A["default"].weight.copy_(adapters[prefix + ".lora_a"])
        module.lora_B["default"].weight.copy_(adapters[prefix + ".lora_b"])
        assert abs(module.scaling["default"] - float(task["scale"])) < 1e-12
        set_ += 1
    assert set_ * 2 == len(adapters)
    out = {"peft": model(ids).logits.contiguous()}
    merged = model.merge_and_unload()
    for n, p in merged.named_parameters():
        if n.endswith("proj.weight"):
            out[f"merged.{n}"] = p.detach().contiguous()
    return out


if __name__ == "__main__":
    main()
