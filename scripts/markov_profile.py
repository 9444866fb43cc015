"""One markov_draft launch at a bench shape for a profiler (ncu): python3 scripts/markov_profile.py B K [T]."""
import sys

import torch

from jitkern.ops import speculative as ops


def markov_inputs(b, k, V=129280, r=128):
    """The bench's markov_draft inputs (fixed seed): base [b, k, V] bf16, prev [b], w_in, w_out [V, r] bf16."""
    g = torch.Generator(device="cuda").manual_seed(1)
    w_in = (torch.randn(V, r, device="cuda", generator=g) * 0.2).to(torch.bfloat16)
    w_out = (torch.randn(V, r, device="cuda", generator=g) * 0.2).to(torch.bfloat16)
    base = torch.randn(b, k, V, device="cuda", generator=g).to(torch.bfloat16)
    prev = torch.randint(0, V, (b,), device="cuda", generator=g)
    return base, prev, w_in, w_out


if __name__ == "__main__":
    b, k = int(sys.argv[1]), int(sys.argv[2])
    temp = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    base, prev, w_in, w_out = markov_inputs(b, k)
    for _ in range(3):
        ops.markov_draft(base, prev, w_in, w_out, temp)
    torch.cuda.synchronize()
