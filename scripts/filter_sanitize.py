"""Small verify_sampled / verify_tree_sampled calls with top-k / top-p for compute-sanitizer
(memcheck, racecheck): filter_fast's candidate collection and sort, its overflow fallback, the
threshold search. Usage: compute-sanitizer --tool racecheck python3 scripts/filter_sanitize.py"""
import torch

from jitkern.ops import speculative as ops

g = torch.Generator(device="cuda").manual_seed(5)
for V, dtype, scale in ((129280, torch.bfloat16, 1.0), (5003, torch.float32, 6.0), (4096, torch.bfloat16, 2.0)):
    for tk, tp in ((50, 0.9), (None, 0.9), (300, None), (7, None)):
        for fast in (True, False):
            ops.SAMPLED_FILTER_FAST = fast
            b, k = 2, 2
            logits = (torch.randn(b * (k + 1), V, device="cuda", generator=g) * scale).to(dtype)
            q = torch.softmax(torch.randn(b * k, V, device="cuda", generator=g), -1)
            dr = torch.multinomial(q, 1, generator=g).view(-1)
            cu = torch.arange(b + 1, device="cuda", dtype=torch.int32) * k
            acc, out = ops.verify_sampled(logits, dr, q, cu, 1.0, tk, tp, seed=3, max_num_draft=k)
            par = torch.tensor([-1, 0, 1] * b, dtype=torch.int32, device="cuda")
            toks = torch.cat([torch.zeros(b, 1, dtype=dr.dtype, device="cuda"), dr.view(b, k)], 1).reshape(-1)
            qt = torch.cat([torch.zeros(b, 1, V, device="cuda"), q.view(b, k, V)], 1).view(-1, V)
            ta, to, _ = ops.verify_tree_sampled(logits, toks, par, qt, cu // k * (k + 1), 1.0, tk, tp, seed=3,
                                                max_depth=k)
            torch.cuda.synchronize()
            print(V, dtype, tk, tp, fast, acc.tolist(), ta.tolist(), flush=True)
ops.SAMPLED_FILTER_FAST = True
