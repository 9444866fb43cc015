"""`jitkern bench spec`: speculative verification over a 129280-token vocabulary (bf16 target
logits), jitkern kernels against plain PyTorch in the same run, and the floor = bytes that must
be read (logits; plus fp32 draft probabilities for sampled) at the measured copy bandwidth.
Kernel time by CUDA-graph replay; inputs rotate over enough copies to exceed L2."""
from __future__ import annotations

from .common import event_time_us, graph_time_us, measure_copy_gbps, print_table

CASES = [(1, 7), (16, 7), (64, 7), (256, 3)]
L2_BYTES = 50 << 20


def add_args(p):
    p.add_argument("--vocab", type=int, default=129280)
    p.add_argument("--cases", default=",".join(f"{b}x{k}" for b, k in CASES), help="b x k list, e.g. 1x7,64x7")
    p.add_argument("--kinds", default="greedy,sampled")


def _time(fn, rotate):
    try:
        return graph_time_us(fn, rotate=rotate), "graph"
    except Exception:  # an op that cannot be captured: fall back to events (adds launch latency)
        import torch
        torch.cuda.synchronize()
        return event_time_us(lambda: fn(0)), "events"


def run(args) -> list[dict]:
    import torch
    from ..ops import speculative as ops
    from ..reference import speculative as ref
    V = args.vocab
    kinds = args.kinds.split(",")
    gbps = measure_copy_gbps()
    recs = []
    for case in args.cases.split(","):
        b, k = (int(x) for x in case.split("x"))
        rows, n = b * (k + 1), b * k
        lbytes, qbytes = rows * V * 2, n * V * 4
        rot = max(1, min(64, -(-2 * L2_BYTES // (lbytes + (qbytes if "sampled" in kinds else 0)))))
        g = torch.Generator(device="cuda").manual_seed(0)
        logits = [torch.randn(rows, V, device="cuda", generator=g).to(torch.bfloat16) for _ in range(rot)]
        drafts = [torch.randint(0, V, (n,), device="cuda", generator=g) for _ in range(rot)]
        for i in range(rot):  # accept ~ half the drafts so the bonus position varies
            am = logits[i].view(b, k + 1, V)[:, :k].argmax(-1).reshape(-1)
            keep = torch.rand(n, device="cuda", generator=g) < 0.7
            drafts[i] = torch.where(keep, am, drafts[i])
        cu = torch.arange(b + 1, device="cuda", dtype=torch.int32) * k
        if "greedy" in kinds:
            acc, out = ops.verify_greedy(logits[0], drafts[0], cu, max_num_draft=k)
            tacc, tbonus = ref.torch_verify_greedy(logits[0].view(b, k + 1, V), drafts[0].view(b, k))
            ok = torch.equal(acc.long(), tacc) and torch.equal(out.long().gather(1, tacc.view(-1, 1)), tbonus)
            us, _ = _time(lambda i: ops.verify_greedy(logits[i], drafts[i], cu, max_num_draft=k), rot)
            tus, how = _time(lambda i: ref.torch_verify_greedy(logits[i].view(b, k + 1, V), drafts[i].view(b, k)), rot)
            floor = lbytes / (gbps * 1e3)
            recs.append({"kind": "greedy", "b": b, "k": k, "V": V, "us": us, "floor_us": floor,
                         "pct_floor": 100 * floor / us, "gbps": lbytes / us / 1e3, "torch_us": tus,
                         "torch_timing": how, "speedup": tus / us, "matches_torch": ok, "rotate": rot})
        if "sampled" in kinds:
            q = [torch.softmax(torch.randn(n, V, device="cuda", generator=g), -1) for _ in range(rot)]
            us, _ = _time(lambda i: ops.verify_sampled(logits[i], drafts[i], q[i], cu, 1.0, seed=i, max_num_draft=k), rot)
            tus, how = _time(lambda i: ref.torch_verify_sampled(logits[i].view(b, k + 1, V), drafts[i].view(b, k),
                                                               q[i].view(b, k, V)), rot)
            floor = (lbytes + qbytes) / (gbps * 1e3)
            recs.append({"kind": "sampled", "b": b, "k": k, "V": V, "us": us, "floor_us": floor,
                         "pct_floor": 100 * floor / us, "gbps": (lbytes + qbytes) / us / 1e3, "torch_us": tus,
                         "torch_timing": how, "speedup": tus / us, "rotate": rot})
            del q
        del logits, drafts
        torch.cuda.empty_cache()
    print_table(recs, [("kind", "kind", ""), ("b", "b", ""), ("k", "k", ""), ("jitkern us", "us", ".2f"),
                       ("floor us", "floor_us", ".2f"), ("% of floor", "pct_floor", ".1f"), ("GB/s", "gbps", ".0f"),
                       ("torch us", "torch_us", ".1f"), ("torch timing", "torch_timing", ""),
                       ("speedup", "speedup", ".1f"), ("== torch", "matches_torch", "")],
                title=f"speculative verify, V={V}, bf16 logits; copy bandwidth {gbps:.0f} GB/s")
    return recs
