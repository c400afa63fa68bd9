"""TRL's DPOTrainer or RewardTrainer on the same model, pairs and settings as `quern train`
with `objective = "dpo"` / `"rm"` (benches/pref/run.sh).

Usage: trl_pref.py dpo|rm HF_MODEL_DIR TRAIN.jsonl HELDOUT.jsonl OUT.json STEPS BATCH LR THREADS

Plain (non-conversational) prompt / chosen / rejected strings: TRL tokenizes the prompt and
each completion apart and ends the completion with eos, as `quern tokenize --objective dpo`
does without a chat template. fp32, CPU, Trainer's default fused AdamW (betas 0.9/0.999)
with a constant learning rate and no warmup, no gradient checkpointing. DPO: sigmoid loss, beta 0.1,
the reference a frozen copy of the starting model. RM: a fresh scalar head
(`AutoModelForSequenceClassification`, num_labels 1), no reward centering. Writes the
seconds and loss of every optimizer step and the held-out pair accuracy after training.
"""
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from datasets import Dataset
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                          TrainerCallback)

mode, model_dir, train, held, out, steps, batch, lr, threads = sys.argv[1:10]
steps, batch, threads, lr = int(steps), int(batch), int(threads), float(lr)
torch.set_num_threads(threads)
torch.manual_seed(1234)


def load(path):
    return Dataset.from_list(
        [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in map(json.loads, open(path)) if r]
    )


class Clock(TrainerCallback):
    def __init__(self):
        self.t = time.perf_counter()
        self.steps = []

    def on_step_begin(self, args, state, control, **kw):
        self.t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.steps.append(time.perf_counter() - self.t)


tok = AutoTokenizer.from_pretrained(model_dir)
if tok.pad_token is None:
    tok.pad_token = tok.eos_token
common = dict(
    output_dir=os.path.join(os.path.dirname(out), f"trl-{mode}"),
    per_device_train_batch_size=batch,
    per_device_eval_batch_size=batch,
    max_steps=steps,
    learning_rate=lr,
    lr_scheduler_type="constant",
    warmup_steps=0,
    weight_decay=0.0,
    optim="adamw_torch_fused",
    adam_beta1=0.9,
    adam_beta2=0.999,
    logging_steps=1,
    report_to=[],
    save_strategy="no",
    use_cpu=True,
    seed=1234,
    dataloader_num_workers=0,
    gradient_checkpointing=False,
    max_length=128,
)
clock = Clock()
if mode == "dpo":
    from trl import DPOConfig, DPOTrainer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    args = DPOConfig(beta=0.1, loss_type="sigmoid", **common)
    trainer = DPOTrainer(model=model, args=args, train_dataset=load(train), eval_dataset=load(held),
                         processing_class=tok, callbacks=[clock])
else:
    from trl import RewardConfig, RewardTrainer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    args = RewardConfig(**common)
    trainer = RewardTrainer(model=model, args=args, train_dataset=load(train), eval_dataset=load(held),
                            processing_class=tok, callbacks=[clock])
t0 = time.perf_counter()
trainer.train()
wall = time.perf_counter() - t0
losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
ev = trainer.evaluate()
acc = ev.get("eval_rewards/accuracies", ev.get("eval_accuracy"))
json.dump({"step_s": clock.steps, "loss": losses, "heldout_accuracy": acc, "eval": ev, "wall_s": wall},
          open(out, "w"), indent=1)
print(json.dumps({"tool": f"trl {mode}", "first_loss": losses[0] if losses else None,
                  "mean_step_s": sum(clock.steps[1:]) / max(1, len(clock.steps) - 1),
                  "heldout_accuracy": acc}))
