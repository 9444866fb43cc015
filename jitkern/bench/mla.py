"""`jitkern bench mla`: MLA decode over a paged latent cache (page 64, shuffled block table, all
requests at full length) against plain PyTorch measured in the same run and the copy ceiling.

Time: CUDA-graph replay of back-to-back ``mla_decode`` calls (decode + combine; the metadata,
made once per decode step and shared by all layers, is timed on its own), rotating over as many
cache copies as keep the working set over twice the L2. GB/s counts the latent cache read once
plus q and out; TFLOPS counts 2*b*s_q*h_q*s_k*(576+512).
"""
from __future__ import annotations

from .common import geomean, graph_time_us, measure_copy_gbps, print_table

# (b, s_k, h_q, s_q) -> FlashMLA (commit 9241ae3) microseconds on the anchor H100
CASES = [(64, 4096, 128, 1), (64, 4096, 16, 2), (128, 8192, 128, 1), (128, 8192, 128, 2), (1, 32768, 128, 1),
         (32, 4096, 128, 4)]
FLASHMLA_US = {(64, 4096, 128, 1): 130.1, (64, 4096, 16, 2): 117.2, (128, 8192, 128, 1): 513.5,
               (128, 8192, 128, 2): 830.9, (1, 32768, 128, 1): 50.8, (32, 4096, 128, 4): 212.7}
L2_BYTES = 50 * 2 ** 20


def add_args(p):
    p.add_argument("--cases", type=str, default=None, help="b:s_k:h_q:s_q, comma-separated (default: the six)")
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--no-peers", action="store_true", help="skip plain PyTorch")
    p.add_argument("--no-check", action="store_true", help="skip the float32 reference check")
    p.add_argument("--impl", default=None, help="comma-separated decode paths (jitkern.ops.mla.IMPLS); "
                   "default: what mla_decode picks ($JITKERN_MLA_IMPL, else ops.mla.default_impl)")


def _cases(args):
    if not args.cases:
        return CASES
    return [tuple(int(v) for v in c.split(":")) for c in args.cases.split(",") if c]


def _make(b, s_k, h_q, s_q, seed):
    import torch
    g = torch.Generator(device="cuda").manual_seed(seed)
    pages = -(-s_k // 64)
    kv = torch.randn(b * pages, 64, 1, 576, generator=g, device="cuda", dtype=torch.bfloat16)
    bt = torch.randperm(b * pages, generator=g, device="cuda").to(torch.int32).view(b, pages)
    return kv, bt


def run(args):
    import torch
    from ..ops import mla
    from ..reference import mla as ref
    copy = measure_copy_gbps()
    impls = [x for x in args.impl.split(",") if x] if args.impl else [None]
    rows = []
    for b, s_k, h_q, s_q in _cases(args):
        q = torch.randn(b, s_q, h_q, 576, device="cuda", dtype=torch.bfloat16)
        sl = torch.full((b,), s_k, dtype=torch.int32, device="cuda")
        cache_bytes = b * s_k * 576 * 2
        copies = max(1, min(8, -(-2 * L2_BYTES // cache_bytes)))
        sets = [_make(b, s_k, h_q, s_q, 1000 + i) for i in range(copies)]
        md = mla.mla_metadata(sl, s_q, h_q)
        out = torch.empty(b, s_q, h_q, 512, device="cuda", dtype=torch.bfloat16)
        lse = torch.empty(b, h_q, s_q, device="cuda", dtype=torch.float32)
        base = {"case": f"b={b} s_k={s_k} h_q={h_q} s_q={s_q}", "b": b, "s_k": s_k, "h_q": h_q, "s_q": s_q,
                "cache_copies": copies, "num_parts": md.num_parts}
        nbytes = cache_bytes + b * s_q * h_q * (576 + 512) * 2
        flops = 2 * b * s_q * h_q * s_k * (576 + 512)
        base["metadata_us"] = graph_time_us(lambda i: mla.mla_metadata(sl, s_q, h_q, out=md), calls=args.calls,
                                            reps=args.reps)
        recs = []
        ro = rl = None
        if not args.no_check:  # one float32 reference per case, shared by the impls
            ro, rl = ref.mla_decode_ref(q, sets[0][0], sets[0][1], sl)
        for impl in impls:
            if impl in mla.NARROW_ROWS_IMPLS and s_q * h_q > mla.NARROW_ROWS:
                continue  # that path takes only query blocks of <= NARROW_ROWS rows
            rec = dict(base, impl=impl or "default", path=impl or mla.default_impl(b, s_q, h_q, md.num_parts))
            if ro is not None:
                kv, bt = sets[0]
                o, l = mla.mla_decode(q, kv, bt, sl, md, impl=impl)
                rec["rel_err"] = ((o.float() - ro).norm() / ro.norm()).item()
                rec["lse_max_abs_err"] = (l - rl).abs().max().item()
                rec["nan"] = bool(torch.isnan(o).any().item() or torch.isnan(l).any().item())
            us = graph_time_us(lambda i: mla.mla_decode(q, sets[i][0], sets[i][1], sl, md, out=(out, lse), impl=impl),
                               calls=args.calls, reps=args.reps, rotate=copies)
            rec.update(us=us, gbps=nbytes / us / 1e3, tflops=flops / us / 1e6, floor_us=nbytes / copy / 1e3,
                       copy_gbps=copy)
            rec["frac_copy"] = rec["gbps"] / copy
            fm = FLASHMLA_US.get((b, s_k, h_q, s_q))
            if fm:
                rec["flashmla_us_anchor"] = fm
                rec["vs_flashmla"] = fm / us
            recs.append(rec)
        del ro, rl
        if not args.no_peers:
            try:
                pus = graph_time_us(lambda i: ref.mla_decode_plain(q, sets[i][0], sets[i][1], sl),
                                    calls=2, reps=5, warmup=2, rotate=copies)
                for rec in recs:
                    rec["torch_us"] = pus
                    rec["vs_torch"] = pus / rec["us"]
            except Exception as e:  # a peer failing must not lose the kernel's numbers
                for rec in recs:
                    rec["torch_us"] = None
                    rec["torch_error"] = repr(e)[:200]
            torch.cuda.empty_cache()
        rows.extend(recs)
        del sets
        torch.cuda.empty_cache()
    print_table(rows, [("case", "case", ""), ("impl", "impl", ""), ("path", "path", ""), ("us", "us", ".1f"), ("GB/s", "gbps", ".0f"), ("TFLOPS", "tflops", ".0f"),
                       ("floor us", "floor_us", ".1f"), ("FlashMLA us", "flashmla_us_anchor", ".1f"),
                       ("x FlashMLA", "vs_flashmla", ".2f"), ("torch us", "torch_us", ".1f"), ("x torch", "vs_torch", ".1f"),
                       ("meta us", "metadata_us", ".1f"), ("rel err", "rel_err", ".2e"), ("lse err", "lse_max_abs_err", ".1e")],
                title=f"MLA decode (copy ceiling {copy:.0f} GB/s)")
    for impl in impls:
        gm = geomean([r.get("vs_flashmla") for r in rows if r["impl"] == (impl or "default")])
        if gm:
            print(f"geomean x FlashMLA (anchor), {impl or 'default'}: {gm:.2f}")
    return rows
