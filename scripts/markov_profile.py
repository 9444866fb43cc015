"""One markov_draft launch at a bench shape for a profiler (ncu): python3 scripts/markov_profile.py B K [T]."""
import sys

import torch

from jitkern.ops import speculative as ops

b, k = int(sys.argv[1]), int(sys.argv[2])
temp = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
V, r = 129280, 128
g = torch.Generator(device="cuda").manual_seed(1)
w_in = (torch.randn(V, r, device="cuda", generator=g) * 0.2).to(torch.bfloat16)
w_out = (torch.randn(V, r, device="cuda", generator=g) * 0.2).to(torch.bfloat16)
base = torch.randn(b, k, V, device="cuda", generator=g).to(torch.bfloat16)
prev = torch.randint(0, V, (b,), device="cuda", generator=g)
for _ in range(3):
    ops.markov_draft(base, prev, w_in, w_out, temp)
torch.cuda.synchronize()
