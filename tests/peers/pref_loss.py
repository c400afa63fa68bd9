"""Reference reward-model and DPO computations in plain PyTorch, for tests/it/pref.rs.

Usage: pref_loss.py TASK.json OUT.safetensors

TASK.json:
  "kind": "rm" or "dpo",
  "model": a Hugging Face directory (quern export --format hf): for rm a
           LlamaForSequenceClassification with one output (the reward), for dpo the policy's
           LlamaForCausalLM,
  "reference": (dpo) the reference's LlamaForCausalLM directory,
  "pairs": [[prompt ids, chosen ids, rejected ids], ...],
  "center": (rm) reward centering's coefficient, "beta" and "loss" (dpo: sigmoid, ipo, hinge).

Every sequence (prompt + completion) runs alone, unpadded (batch of one, no pad token), so
nothing here depends on how quern pads. rm: the reward is transformers' score at the last
position; the loss is -log sigmoid(r_c - r_r) + center * (r_c + r_r)^2, a mean over the
pairs. dpo: a sequence's log-probability is the sum over the completion's ids of
log_softmax(logits[t - 1])[id_t], computed here by hand from the logits; h = (lp_c - lp_r) -
(ref_c - ref_r), the scores are beta * (lp - ref), the loss the variant's formula, a mean.

Writes {"chosen": [n], "rejected": [n], "loss": []} (float64; chosen/rejected are the
rewards for rm and the implicit rewards for dpo).

"kind": "dpo_grad" ({"dir", "pairs", "beta"}) instead draws a random tiny LlamaForCausalLM
(seeded; untied, grouped-query attention, norms drawn too), saves it to "dir" with
save_pretrained, and with policy = reference (the reference's log-probabilities computed
without gradients) writes, for each loss variant V of sigmoid, ipo and hinge, the first
loss V_loss and its gradients V_grad_<hf weight name> for a few weights (float32).
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
import torch.nn.functional as F
from safetensors.torch import save_file


def main():
    task = json.load(open(sys.argv[1]))
    torch.set_grad_enabled(False)
    pairs = task["pairs"]
    if task["kind"] == "dpo_grad":
        return dpo_grad(task, pairs)
    if task["kind"] == "rm":
        from transformers import LlamaForSequenceClassification

        model = LlamaForSequenceClassification.from_pretrained(
            task["model"], torch_dtype=torch.float32
        )
        assert model.config.num_labels == 1, model.config.num_labels
        model.config.pad_token_id = None
        model.eval()

        def reward(ids):
            return model(input_ids=torch.tensor([ids])).logits[0, 0].double()

        chosen = torch.stack([reward(p + c) for p, c, _ in pairs])
        rejected = torch.stack([reward(p + r) for p, _, r in pairs])
        loss = -F.logsigmoid(chosen - rejected).mean()
        loss = loss + task["center"] * ((chosen + rejected) ** 2).mean()
    else:
        from transformers import LlamaForCausalLM

        def load(d):
            m = LlamaForCausalLM.from_pretrained(d, torch_dtype=torch.float32)
            m.eval()
            return m

        policy, reference = load(task["model"]), load(task["reference"])

        def logp(model, prompt, completion):
            ids = prompt + completion
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
            total = torch.zeros((), dtype=torch.float64)
            for t in range(len(prompt), len(ids)):
                total = total + torch.log_softmax(logits[t - 1], -1)[ids[t]]
            return total

        beta = task["beta"]
        ratio_c = torch.stack(
            [logp(policy, p, c) - logp(reference, p, c) for p, c, _ in pairs]
        )
        ratio_r = torch.stack(
            [logp(policy, p, r) - logp(reference, p, r) for p, _, r in pairs]
        )
        h = ratio_c - ratio_r
        if task["loss"] == "sigmoid":
            losses = -F.logsigmoid(beta * h)
        elif task["loss"] == "ipo":
            losses = (h - 1 / (2 * beta)) ** 2
        else:
            losses = torch.relu(1 - beta * h)
        loss = losses.mean()
        chosen, rejected = beta * ratio_c, beta * ratio_r
    save_file(
        {
            "chosen": chosen.contiguous(),
            "rejected": rejected.contiguous(),
            "loss": loss.reshape([]).contiguous(),
        },
        sys.argv[2],
    )


def seq_logp(model, prompt, completion):
    """The completion's log-probability: log_softmax(logits[t - 1])[id_t] summed by hand."""
    ids = prompt + completion
    logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    total = torch.zeros((), dtype=torch.float64)
    for t in range(len(prompt), len(ids)):
        total = total + torch.log_softmax(logits[t - 1], -1)[ids[t]]
    return total


def dpo_grad(task, pairs):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=80, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        rope_theta=50000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
    model.eval()
    model.save_pretrained(task["dir"], safe_serialization=True)
    beta = task["beta"]
    names = [
        "model.embed_tokens.weight",
        "lm_head.weight",
        "model.norm.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.1.mlp.gate_proj.weight",
        "model.layers.0.input_layernorm.weight",
    ]
    params = dict(model.named_parameters())
    out = {}
    with torch.no_grad():
        ref = [(seq_logp(model, p, c), seq_logp(model, p, r)) for p, c, r in pairs]
    for variant in ["sigmoid", "ipo", "hinge"]:
        model.zero_grad()
        with torch.enable_grad():
            h = torch.stack(
                [
                    (seq_logp(model, p, c) - rc) - (seq_logp(model, p, r) - rr)
                    for (p, c, r), (rc, rr) in zip(pairs, ref)
                ]
            )
            if variant == "sigmoid":
                losses = -F.logsigmoid(beta * h)
            elif variant == "ipo":
                losses = (h - 1 / (2 * beta)) ** 2
            else:
                losses = torch.relu(1 - beta * h)
            loss = losses.mean()
            loss.backward()
        out[f"{variant}_loss"] = loss.float().reshape([]).contiguous()
        for n in names:
            out[f"{variant}_grad_{n}"] = params[n].grad.float().contiguous()
    save_file(out, sys.argv[2])


if __name__ == "__main__":
    main()
