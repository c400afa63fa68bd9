"""The Hugging Face side of benches/cls: BertForSequenceClassification fine-tuned with
`transformers.Trainer` on the same corpus, steps, batch, schedule and seed as quern's run.

Usage: hf_trainer.py MODEL_DIR CORPUS.jsonl OUT.json --steps N --batch B --seq-len L
       --lr LR --warmup W --seed S --threads T

The pooler is re-initialised (normal 0.02, zero bias) as quern's fresh pooler is, instead of
the checkpoint's; texts are tokenized with the model's tokenizer, cut to L tokens, padded per
batch. Writes {"accuracy", "macro_f1", "train_runtime_s", "step_s", "losses", "test_rows"}.
"""
import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("corpus")
    ap.add_argument("out")
    for k, t in [("steps", int), ("batch", int), ("seq_len", int), ("lr", float),
                 ("warmup", int), ("seed", int), ("threads", int)]:
        ap.add_argument("--" + k.replace("_", "-"), type=t, required=True)
    ap.add_argument("--optim", default="adamw_torch",
                    help="Trainer's optimizer: adamw_torch (for-loop) or adamw_torch_fused")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from transformers import (AutoTokenizer, BertForSequenceClassification,
                              DataCollatorWithPadding, Trainer, TrainingArguments, set_seed)
    set_seed(a.seed)
    rows = [json.loads(l) for l in open(a.corpus)]
    labels = sorted({r["label"] for r in rows})
    tok = AutoTokenizer.from_pretrained(a.model)

    class Split(torch.utils.data.Dataset):
        def __init__(self, name):
            self.rows = [r for r in rows if r["split"] == name]
            self.enc = tok([r["text"] for r in self.rows], truncation=True, max_length=a.seq_len)

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            item = {k: v[i] for k, v in self.enc.items()}
            item["labels"] = labels.index(self.rows[i]["label"])
            return item

    train, test = Split("train"), Split("test")
    model = BertForSequenceClassification.from_pretrained(a.model, num_labels=len(labels))
    with torch.no_grad():
        model.bert.pooler.dense.weight.normal_(0.0, 0.02)
        model.bert.pooler.dense.bias.zero_()
    args = TrainingArguments(
        output_dir=os.path.join(os.path.dirname(a.out), "hf-run"),
        max_steps=a.steps,
        per_device_train_batch_size=a.batch,
        per_device_eval_batch_size=64,
        learning_rate=a.lr,
        warmup_steps=a.warmup,
        lr_scheduler_type="linear",
        weight_decay=0.01,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        optim=a.optim,
        seed=a.seed,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train,
                      data_collator=DataCollatorWithPadding(tok))
    t0 = time.time()
    out = trainer.train()
    runtime = time.time() - t0
    pred = trainer.predict(test)
    p = pred.predictions.argmax(-1)
    g = np.array([labels.index(r["label"]) for r in test.rows])
    f1s = []
    for c in range(len(labels)):
        tp = int(((p == c) & (g == c)).sum())
        prec = tp / max(int((p == c).sum()), 1)
        rec = tp / max(int((g == c).sum()), 1)
        f1s.append(0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    json.dump({
        "accuracy": float((p == g).mean()),
        "macro_f1": float(np.mean(f1s)),
        "train_runtime_s": runtime,
        "step_s": runtime / a.steps,
        "losses": losses,
        "test_rows": len(test),
        "train_loss": out.training_loss,
    }, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
