"""`jitkern bench grouped`: grouped FP8/BF16 GEMM for MoE (contiguous and masked layouts) on the
anchor cases, with torch's grouped GEMMs (``torch._grouped_mm`` bf16, ``torch._scaled_grouped_mm``
fp8 row-wise) measured in the same run. Kernel time by CUDA-graph replay."""
from __future__ import annotations

import random

# (groups, total M, N, K): contiguous layout, groups of equal size (anchors file)
CONTIGUOUS = [(4, 34304, 6144, 7168), (4, 33024, 7168, 3072), (4, 35456, 4096, 2048),
              (8, 36864, 6144, 7168), (8, 33920, 7168, 3072), (8, 35200, 4096, 2048),
              (32, 10624, 6144, 7168), (32, 11008, 7168, 3072), (32, 10368, 4096, 2048)]
# (groups, expected M per group, N, K): masked layout, max_m 4096 per group
MASKED = [(32, 192, 6144, 7168), (32, 192, 7168, 3072), (32, 20, 6144, 7168), (32, 20, 7168, 3072),
          (6, 1024, 6144, 7168), (6, 1024, 7168, 3072)]
DEEPGEMM = {("contiguous", 4, 6144, 7168): 1447, ("contiguous", 4, 7168, 3072): 1354, ("contiguous", 4, 4096, 2048): 1260,
            ("contiguous", 8, 6144, 7168): 1389, ("contiguous", 8, 7168, 3072): 1275, ("contiguous", 8, 4096, 2048): 1241,
            ("contiguous", 32, 6144, 7168): 1116, ("contiguous", 32, 7168, 3072): 1011, ("contiguous", 32, 4096, 2048): 874,
            ("masked", 32, 192, 6144, 7168): 2311, ("masked", 32, 192, 7168, 3072): 2269,
            ("masked", 32, 20, 6144, 7168): 2679, ("masked", 32, 20, 7168, 3072): 2349,
            ("masked", 6, 1024, 6144, 7168): 878, ("masked", 6, 1024, 7168, 3072): 999}
MAX_M = 4096


def add_args(p):
    p.add_argument("--layouts", default="contiguous,masked")
    p.add_argument("--kinds", default="fp8,bf16")
    p.add_argument("--no-peers", action="store_true", help="skip torch's grouped GEMMs")
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--sweep", action="store_true",
                   help="also time the candidate tiles of each case (JSON 'sweep'; the table keeps the default config)")
    p.add_argument("--precompile", action="store_true", help="compile the run's kernels (sweep included) and exit")


def sweep_configs(kind, layout, expected_m):
    """Candidate tiles for one case: BLOCK_M 128 (the contiguous alignment; masked with more than
    64 rows per group), or 64, plus 256 for fp8 (masked over 64 rows per group; contiguous), BLOCK_N
    over the spill-free range."""
    from .. import heuristics as H
    bms = [128] if layout == "contiguous" else ([64] if expected_m <= 64 else [64, 128])
    if kind == "fp8" and (layout == "contiguous" or expected_m > 64):
        bms.append(256)
    out = []
    for bm in bms:
        for bn in H.block_n_candidates(kind, bm):
            if bn >= (96 if kind == "fp8" else 128):
                out.append(H.GemmConfig(bm, bn, H.gemm_max_stages(kind, bm, bn, accum=layout == "masked")))
    return out


def _default_config(kind, layout, g, rows_per_group, n, k):
    from ..ops import gemm
    from ..runtime.arch import target_for_arch
    return gemm._grouped_config(kind, rows_per_group, g, n, k, target_for_arch("sm_90a"), None,
                                masked=layout == "masked")


def _precompile(args):
    from ..ops.gemm import gemm_spec
    from ..warmup import warmup
    specs = []
    for layout in args.layouts.split(","):
        for kind in args.kinds.split(","):
            for case in (CONTIGUOUS if layout == "contiguous" else MASKED):
                g, m, n, k = case
                rows = max(65, m // g) if layout == "contiguous" else m
                cfgs = [_default_config(kind, layout, g, rows, n, k)]
                if args.sweep:
                    cfgs += sweep_configs(kind, layout, m if layout == "masked" else rows)
                specs += [gemm_spec(kind, n, k, c, group_mode=1 if layout == "contiguous" else 2) for c in cfgs]
    specs = list(dict.fromkeys(specs))
    outs = warmup(specs, "sm_90a", progress=False)
    print(f"precompiled {len(specs)} grouped specs; failed: {sum(o.status == 'failed' for o in outs)}")
    return []


def _time_configs(fn, cfgs, calls):
    """[(name, us)] of fn(config) per candidate (None: the op's own choice)."""
    from .common import graph_time_us
    res = []
    for cfg in cfgs:
        name = "default" if cfg is None else f"{cfg.block_m}x{cfg.block_n}x{cfg.stages}"
        try:
            res.append([name, round(graph_time_us(lambda i: fn(cfg), calls=calls, reps=7), 3)])
        except Exception as e:  # a candidate that cannot launch is reported, not fatal
            print(f"  {name}: {type(e).__name__}: {str(e)[:160]}")
    return res


def _quant_b(w):
    import torch
    from ..ops.quant import per_block_quant_fp8
    qs = [per_block_quant_fp8(w[g]) for g in range(w.shape[0])]
    return torch.stack([q for q, _ in qs]), torch.stack([s for _, s in qs])


def _check(d_rows, a_rows, b_g, fp8):
    """Relative error of output rows against float32 math on dequantised inputs (GPU)."""
    from ..reference.gemm import dequant_blocks, dequant_rows
    if fp8:
        ref = dequant_rows(*a_rows).float() @ dequant_blocks(*b_g).float().t()
    else:
        ref = a_rows.float() @ b_g.float().t()
    return ((d_rows.float() - ref).norm() / ref.norm()).item()


def _peer(fn, calls):
    from .common import graph_time_us
    try:
        return graph_time_us(lambda i: fn(), calls=calls, reps=7)
    except Exception as e:  # a torch build without these private ops: say so, keep going
        print(f"  peer failed: {type(e).__name__}: {str(e)[:160]}")
        return None


def _sweep(rec, fnc, check_errs, kind, layout, expected_m, calls):
    """Time the candidate tiles; verify the fastest one (its error goes in the record too)."""
    sweep = _time_configs(fnc, sweep_configs(kind, layout, expected_m), calls)
    rec["sweep"] = sweep
    if sweep:
        best = min(sweep, key=lambda x: x[1])
        bm, bn, st = (int(v) for v in best[0].split("x"))
        from .. import heuristics as H
        fnc(H.GemmConfig(bm, bn, st))
        rec["sweep_best"], rec["sweep_best_us"], rec["sweep_best_err"] = best[0], best[1], max(check_errs())


def contiguous_inputs(kind, g, m_total, n, k):
    """Inputs of one contiguous case (groups of equal size, each padded to the alignment) and
    ``fnc(config=None)``, the grouped GEMM writing ``out``. Returns a dict: sizes, padded (rows per
    group before / after padding), group_index, x, w (bf16 sources), a, b (the op's operands), out,
    fnc, check_errs() (first and last group's relative errors against float32 math)."""
    import torch
    from ..ops import gemm
    from ..ops.quant import per_token_group_quant_fp8
    dev = "cuda"
    a_ = gemm.grouped_m_alignment()
    sizes = [m_total // g] * g
    sizes[-1] += m_total - sum(sizes)
    padded = [-(-s // a_) * a_ for s in sizes]
    rows = sum(padded)
    group_index = torch.full((rows,), -1, dtype=torch.int32)
    x = torch.zeros(rows, k, dtype=torch.bfloat16, device=dev)
    off = 0
    for i, (s, p) in enumerate(zip(sizes, padded)):
        group_index[off:off + s] = i
        x[off:off + s] = torch.randn(s, k, device=dev, dtype=torch.bfloat16)
        off += p
    group_index = group_index.to(dev)
    w = torch.randn(g, n, k, device=dev, dtype=torch.bfloat16) * 0.05
    out = torch.empty(rows, n, device=dev, dtype=torch.bfloat16)
    if kind == "fp8":
        a, b = per_token_group_quant_fp8(x), _quant_b(w)
        fnc = lambda cfg=None: gemm.grouped_gemm_fp8_contiguous(a, b, group_index, out=out, config=cfg)  # noqa: E731
    else:
        a, b = x, w
        fnc = lambda cfg=None: gemm.grouped_gemm_bf16_contiguous(a, b, group_index, out=out, config=cfg)  # noqa: E731

    def check_errs():  # first and last group's rows against float32 math
        errs = []
        for gi in (0, g - 1):
            lo = sum(padded[:gi])
            sl = slice(lo, lo + sizes[gi])
            ar = (a[0][sl], a[1][sl]) if kind == "fp8" else a[sl]
            bg = (b[0][gi], b[1][gi]) if kind == "fp8" else b[gi]
            errs.append(_check(out[sl], ar, bg, kind == "fp8"))
        return errs

    return dict(sizes=sizes, padded=padded, group_index=group_index, x=x, w=w, a=a, b=b, out=out, fnc=fnc,
                check_errs=check_errs)


def _contiguous(kind, g, m_total, n, k, args, rng):
    import torch
    from .common import H100_PEAK_TFLOPS, graph_time_us
    dev = "cuda"
    inp = contiguous_inputs(kind, g, m_total, n, k)
    padded, x, w, out, fnc, check_errs = (inp[key] for key in ("padded", "x", "w", "out", "fnc", "check_errs"))
    out.fill_(float("nan"))
    fnc()
    errs = check_errs()
    us = graph_time_us(lambda i: fnc(), calls=args.calls, reps=7)
    flops = 2.0 * m_total * n * k
    rec = {"layout": "contiguous", "kind": kind, "groups": g, "m": m_total, "n": n, "k": k, "us": us,
           "tflops": flops / us / 1e6, "rel_err": max(errs), "peak_frac": flops / us / 1e6 / H100_PEAK_TFLOPS[kind]}
    if args.sweep:
        out.fill_(float("nan"))
        _sweep(rec, fnc, check_errs, kind, "contiguous", max(65, m_total // g), args.calls)
        rec["sweep_best_tflops"] = flops / rec["sweep_best_us"] / 1e6 if rec.get("sweep_best_us") else None
    if not args.no_peers:
        offs = torch.tensor(padded, device=dev, dtype=torch.int32).cumsum(0).to(torch.int32)
        if kind == "bf16":
            t = _peer(lambda: torch._grouped_mm(x, w.transpose(-2, -1), offs=offs), args.calls)
        else:
            xa = x.float()
            sa = xa.abs().amax(1).clamp_min(1e-4) / 448
            qa = (xa / sa[:, None]).to(torch.float8_e4m3fn)
            sw = w.float().abs().amax(2).clamp_min(1e-4) / 448
            qw = (w.float() / sw[..., None]).to(torch.float8_e4m3fn)
            t = _peer(lambda: torch._scaled_grouped_mm(qa, qw.transpose(-2, -1), sa, sw, offs=offs,
                                                       out_dtype=torch.bfloat16), args.calls)
        rec["torch_us"] = t
        rec["torch_tflops"] = flops / t / 1e6 if t else None
        rec["vs_torch"] = t / us if t else None
    dg = DEEPGEMM.get(("contiguous", g, n, k)) if kind == "fp8" else None
    rec["deepgemm_tflops"] = dg
    rec["vs_deepgemm"] = rec["tflops"] / dg if dg else None
    return rec


def _masked(kind, g, expected, n, k, args, rng):
    import torch
    from ..ops import gemm
    from ..ops.quant import per_token_group_quant_fp8
    from .common import graph_time_us
    dev = "cuda"
    counts = [max(1, min(MAX_M, int(expected * rng.uniform(0.7, 1.3)))) for _ in range(g)]
    masked_m = torch.tensor(counts, dtype=torch.int32, device=dev)
    x = torch.randn(g, MAX_M, k, device=dev, dtype=torch.bfloat16)
    w = torch.randn(g, n, k, device=dev, dtype=torch.bfloat16) * 0.05
    out = torch.empty(g, MAX_M, n, device=dev, dtype=torch.bfloat16)
    if kind == "fp8":
        qa, sa = per_token_group_quant_fp8(x.view(g * MAX_M, k))
        a, b = (qa.view(g, MAX_M, k), sa), _quant_b(w)
        fnc = lambda cfg=None: gemm.grouped_gemm_fp8_masked(a, b, masked_m, expected, out=out, config=cfg)  # noqa: E731
    else:
        a, b = x, w
        fnc = lambda cfg=None: gemm.grouped_gemm_bf16_masked(a, b, masked_m, expected, out=out, config=cfg)  # noqa: E731

    def check_errs():
        errs = []
        for gi in (0, g - 1):
            sl = slice(gi * MAX_M, gi * MAX_M + counts[gi])
            ar = (a[0].view(g * MAX_M, k)[sl], a[1][sl]) if kind == "fp8" else x.view(g * MAX_M, k)[sl]
            bg = (b[0][gi], b[1][gi]) if kind == "fp8" else b[gi]
            errs.append(_check(out.view(g * MAX_M, n)[sl], ar, bg, kind == "fp8"))
        return errs

    out.fill_(float("nan"))
    fnc()
    errs = check_errs()
    us = graph_time_us(lambda i: fnc(), calls=args.calls, reps=7)
    rows = sum(counts)
    flops = 2.0 * rows * n * k
    elem = 1 if kind == "fp8" else 2
    nbytes = rows * k * elem + g * n * k * elem + rows * n * 2
    rec = {"layout": "masked", "kind": kind, "groups": g, "expected_m": expected, "m": rows, "n": n, "k": k,
           "us": us, "tflops": flops / us / 1e6, "gbps": nbytes / us / 1e3, "rel_err": max(errs)}
    if args.sweep:
        out.fill_(float("nan"))
        _sweep(rec, fnc, check_errs, kind, "masked", expected, args.calls)
        rec["sweep_best_gbps"] = nbytes / rec["sweep_best_us"] / 1e3 if rec.get("sweep_best_us") else None
    dg = DEEPGEMM.get(("masked", g, expected, n, k)) if kind == "fp8" else None
    rec["deepgemm_gbps"] = dg
    rec["vs_deepgemm"] = rec["gbps"] / dg if dg else None
    return rec


def run(args):
    import torch
    from .common import measure_copy_gbps, print_table
    if args.precompile:
        return _precompile(args)
    rng = random.Random(0)
    records = []
    kinds = args.kinds.split(",")
    layouts = args.layouts.split(",")
    if "contiguous" in layouts:
        rows = []
        for case in CONTIGUOUS:
            for kind in kinds:
                r = _contiguous(kind, *case, args, rng)
                rows.append(r)
                print(f"  contiguous {kind} G={case[0]} M={case[1]} N={case[2]} K={case[3]}: {r['tflops']:.0f} TFLOPS "
                      f"err {r['rel_err']:.1e}" + (f"; sweep best {r.get('sweep_best')} {r.get('sweep_best_tflops') or 0:.0f}"
                                                    f" TFLOPS err {r.get('sweep_best_err', 0):.1e} {r['sweep']}"
                                                    if args.sweep else ""), flush=True)
                torch.cuda.empty_cache()
        records += rows
        print_table(rows, [("kind", "kind", ""), ("G", "groups", "d"), ("M", "m", "d"), ("N", "n", "d"), ("K", "k", "d"),
                           ("us", "us", ".1f"), ("TFLOPS", "tflops", ".0f"), ("of peak", "peak_frac", ".2f"),
                           ("torch TFLOPS", "torch_tflops", ".0f"), ("x torch", "vs_torch", ".2f"),
                           ("DeepGEMM TFLOPS", "deepgemm_tflops", ".0f"), ("x DeepGEMM", "vs_deepgemm", ".2f"),
                           ("rel err", "rel_err", ".1e")],
                    title="Grouped GEMM, contiguous layout (peers: torch._grouped_mm bf16 / torch._scaled_grouped_mm fp8 row-wise)")
    if "masked" in layouts:
        copy = measure_copy_gbps()
        rows = []
        for case in MASKED:
            for kind in kinds:
                r = _masked(kind, *case, args, rng)
                r["ceiling_frac"] = r["gbps"] / copy
                rows.append(r)
                print(f"  masked {kind} G={case[0]} expected_m={case[1]} N={case[2]} K={case[3]}: {r['gbps']:.0f} GB/s "
                      f"err {r['rel_err']:.1e}" + (f"; sweep best {r.get('sweep_best')} {r.get('sweep_best_gbps') or 0:.0f}"
                                                    f" GB/s err {r.get('sweep_best_err', 0):.1e} {r['sweep']}"
                                                    if args.sweep else ""), flush=True)
                torch.cuda.empty_cache()
        records += rows
        print_table(rows, [("kind", "kind", ""), ("G", "groups", "d"), ("exp. m", "expected_m", "d"), ("rows", "m", "d"),
                           ("N", "n", "d"), ("K", "k", "d"), ("us", "us", ".1f"), ("TFLOPS", "tflops", ".0f"),
                           ("GB/s", "gbps", ".0f"), ("of copy", "ceiling_frac", ".2f"),
                           ("DeepGEMM GB/s", "deepgemm_gbps", ".0f"), ("x DeepGEMM", "vs_deepgemm", ".2f"),
                           ("rel err", "rel_err", ".1e")],
                    title=f"Grouped GEMM, masked layout, max_m {MAX_M} (copy ceiling measured now: {copy:.0f} GB/s)")
    return records
