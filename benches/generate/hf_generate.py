"""transformers' side of the decoding benchmark (benches/generate/run.sh).

Usage: hf_generate.py (--gguf FILE | --hf DIR) --batch B --prompt-tokens P --new-tokens N [--repeat R]

Greedy `generate` with the KV cache (use_cache=True), fp32 on CPU, the same prompt ids in
every row, end-of-sequence ignored (min_new_tokens = N). Prints one JSON line: the median
of R timed runs after a warm-up, with prefill timed separately as one forward pass of the
prompt batch. Decode tokens/s counts the tokens after the first, as quern's --bench does.
"""
import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf")
    ap.add_argument("--hf")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    if a.gguf:
        model = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(a.gguf), gguf_file=os.path.basename(a.gguf), torch_dtype=torch.float32
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(a.hf, torch_dtype=torch.float32)
    load_s = time.perf_counter() - t0
    model.eval()
    vocab = model.config.vocab_size
    ids = torch.arange(a.prompt_tokens, dtype=torch.long).remainder(vocab - 10).add(5)
    x = ids.repeat(a.batch, 1)
    mask = torch.ones_like(x)

    def gen():
        return model.generate(
            x,
            attention_mask=mask,
            max_new_tokens=a.new_tokens,
            min_new_tokens=a.new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=0,
        )

    gen()  # warm-up
    totals, prefills = [], []
    for _ in range(a.repeat):
        t = time.perf_counter()
        model(x, attention_mask=mask, use_cache=True)
        prefills.append(time.perf_counter() - t)
        t = time.perf_counter()
        gen()
        totals.append(time.perf_counter() - t)
    total = statistics.median(totals)
    prefill = statistics.median(prefills)
    decode = max(total - prefill, 1e-9)
    steps = a.new_tokens - 1
    print(json.dumps({
        "peer": "transformers",
        "batch": a.batch,
        "prompt_tokens": a.prompt_tokens,
        "new_tokens": a.new_tokens,
        "load_s": load_s,
        "total_s": total,
        "prefill_s": prefill,
        "decode_s": decode,
        "decode_tokens_per_s": steps * a.batch / decode,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
