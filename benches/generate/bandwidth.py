"""Read bandwidth of this machine: torch summing a 1 GiB fp32 tensor with every core (the
best of 5), the bound of batch-1 decoding (bytes of weights per token over this). Prints one
JSON line. Used by benches/generate/run.sh and benches/compress/run.sh."""
import json
import time

import torch

x = torch.ones(256 * 1024 * 1024)
best = 0.0
for _ in range(5):
    t = time.perf_counter()
    x.sum().item()
    dt = time.perf_counter() - t
    best = max(best, x.numel() * 4 / dt / 1e9)
print(json.dumps({"measure": "read_bandwidth_gb_s", "value": best, "threads": torch.get_num_threads()}))
