"""TRL's GRPOTrainer on the same model, prompts and settings as `quern rl` (benches/rl/run.sh).

Usage: trl_grpo.py HF_MODEL_DIR PROMPTS.jsonl OUT.json STEPS PER_STEP GROUP MAX_NEW THREADS [LORA_RANK]

With LORA_RANK > 0, peft LoRA adapters (rank R, alpha 2R, every linear layer of the blocks,
no dropout) train instead of every weight, as `quern rl` with the same `[lora]`.

The model is quern's Hugging Face export of the same weights; the prompts are the same
GSM8K lines, each the user's turn of the chat template; the reward is 1 when the last number
of the completion equals the answer after `####` (lm-evaluation-harness's flexible-extract
and normalisation, as quern's `exact_match`). GRPO as quern runs it: loss_type "grpo"
(per-sequence token means), beta 0, one iteration, no gradient checkpointing, fp32, CPU.
Writes the seconds of every optimizer step and the completion tokens generated per step.
"""
import json
import os
import re
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

model_dir, prompts, out, steps, per_step, group, max_new, threads = sys.argv[1:9]
steps, per_step, group, max_new, threads = map(int, (steps, per_step, group, max_new, threads))
lora_rank = int(sys.argv[9]) if len(sys.argv) > 9 else 0
torch.set_num_threads(threads)
torch.manual_seed(0)

rows = [json.loads(l) for l in open(prompts) if l.strip()]
data = Dataset.from_list(
    [
        {
            "prompt": [{"role": "user", "content": r["question"]}],
            "target": r["answer"].rsplit("####", 1)[1].strip(),
        }
        for r in rows
    ]
)

FLEX = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")


def norm(s):
    s = s.replace(",", "").replace("$", "")
    if s.endswith("."):
        s = s[:-1]
    s = s.lower()
    m = re.fullmatch(r"(-?[0-9]+)\.0+", s)
    return m.group(1) if m else s


generated = []


def exact_match(prompts, completions, target, completion_ids=None, **kw):
    if completion_ids is not None:
        generated.append(sum(len(c) for c in completion_ids))
    out = []
    for c, t in zip(completions, target):
        text = c[0]["content"] if isinstance(c, list) else c
        found = [m.group(0) for m in FLEX.finditer(text)]
        out.append(1.0 if found and norm(found[-1]) == norm(t) else 0.0)
    return out


class Clock(TrainerCallback):
    def __init__(self):
        self.t = time.perf_counter()
        self.steps = []

    def on_step_begin(self, args, state, control, **kw):
        self.t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.steps.append(time.perf_counter() - self.t)


tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
cfg = GRPOConfig(
    output_dir=os.path.join(os.path.dirname(out), "trl-out"),
    per_device_train_batch_size=per_step * group,
    num_generations=group,
    max_completion_length=max_new,
    max_steps=steps,
    learning_rate=1e-6,
    lr_scheduler_type="constant",
    weight_decay=0.0,
    beta=0.0,
    loss_type="grpo",
    num_iterations=1,
    temperature=1.0,
    gradient_checkpointing=False,
    use_cpu=True,
    bf16=False,
    logging_steps=1,
    report_to=[],
    save_strategy="no",
    seed=1234,
    disable_dropout=True,
)
clock = Clock()
trainer = GRPOTrainer(
    model=model,
    reward_funcs=exact_match,
    args=cfg,
    train_dataset=data,
    processing_class=tok,
    callbacks=[clock],
    peft_config=None if lora_rank == 0 else __import__("peft").LoraConfig(
        r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0, target_modules="all-linear",
        task_type="CAUSAL_LM"),
)
t0 = time.perf_counter()
trainer.train()
wall = time.perf_counter() - t0
rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
json.dump(
    {"step_s": clock.steps, "gen_tokens": generated, "wall_s": wall, "reward": rewards},
    open(out, "w"),
)
