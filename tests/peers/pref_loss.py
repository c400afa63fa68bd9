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


if __name__ == "__main__":
    main()
