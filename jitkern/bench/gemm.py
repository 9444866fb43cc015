"""`jitkern bench gemm`: FP8 block-scaled and BF16 GEMM on the DeepSeek-V3 shapes against cuBLAS
measured in the same run (``torch._scaled_mm`` with row-wise fp8 scales; ``torch.matmul`` bf16).

Times are CUDA-graph replays of back-to-back calls (kernel time). ``--tune`` sweeps candidate
configs per shape and writes the fastest to ``tuning/gemm_<gpu>.json`` (what the heuristic reads).
``--precompile`` compiles every spec the run would use (sweep included) into the cache, no GPU.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

ANCHOR_NK = [(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048)]
ANCHOR_M = [64, 128, 4096]
# (M, N, K) -> DeepGEMM fp8 TFLOPS (commit 54e2261, SM90 1D2D kernel) on the anchor H100
# (../shared/anchors/h100-2026-11-22.md): a figure from another run, so its ratio is indicative on
# an H100 and not comparable on other GPUs.
DEEPGEMM_FP8_TFLOPS = {
    (64, 2112, 7168): 181, (64, 24576, 1536): 305, (64, 32768, 512): 285, (64, 7168, 16384): 315,
    (64, 4096, 7168): 313, (64, 7168, 2048): 274, (128, 2112, 7168): 329, (128, 24576, 1536): 546,
    (128, 32768, 512): 447, (128, 7168, 16384): 605, (128, 4096, 7168): 563, (128, 7168, 2048): 419,
    (4096, 2112, 7168): 1290, (4096, 24576, 1536): 1245, (4096, 32768, 512): 974, (4096, 7168, 16384): 1386,
    (4096, 4096, 7168): 1411, (4096, 7168, 2048): 1267}


def add_args(p):
    p.add_argument("--m", type=str, default=",".join(map(str, ANCHOR_M)), help="comma-separated M values")
    p.add_argument("--nk", type=str, default=None, help="N:K pairs, comma-separated (default: the V3 six)")
    p.add_argument("--kinds", type=str, default="fp8,bf16")
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--tune", action="store_true", help="sweep configs, keep the fastest per shape")
    p.add_argument("--tune-out", type=str, default=None, help="tuning JSON path (default tuning/gemm_<gpu>.json)")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--compile-times", action="store_true", help="cold-compile each chosen kernel (no cache)")
    p.add_argument("--precompile", action="store_true", help="compile the run's specs into the cache and exit")
    p.add_argument("--jobs", type=int, default=None)


def _shapes(args):
    ms = [int(x) for x in args.m.split(",") if x]
    nks = ANCHOR_NK if not args.nk else [tuple(int(v) for v in s.split(":")) for s in args.nk.split(",")]
    return [(m, n, k) for n, k in nks for m in ms]


def sweep_configs(kind: str, m: int, n: int, k: int, num_sms: int = 132):
    from .. import heuristics as H
    bms = [64] if m <= 64 else ([64, 128] if m <= 256 else ([128, 256] if kind == "fp8" else [128]))
    out = []
    for bm in bms:
        for bn in H.block_n_candidates(kind, bm):
            if m > 256 and bn < 96:
                continue
            st = H.gemm_max_stages(kind, bm, bn)
            out.append(H.GemmConfig(bm, bn, st, 16, num_sms))
            if m > 256:  # large M is L2-bound on 128-row tiles: a CTA pair multicasts one operand
                out.append(H.GemmConfig(bm, bn, st, 16, num_sms, 2, 1))
                if -(-n // bn) >= 2:
                    out.append(H.GemmConfig(bm, bn, st, 16, num_sms, 1, 2))
            elif -(-n // bn) >= 2:
                out.append(H.GemmConfig(bm, bn, st, 16, num_sms, 1, 2))
            if m <= 256:
                # few output tiles: split K over more CTAs (fp32 partials, last CTA reduces)
                tiles = -(-m // bm) * -(-n // bn)
                kblocks = -(-k // H.gemm_block_k(kind))
                for split in (2, 3, 4, 6, 8):
                    if tiles * split <= 2 * num_sms and kblocks >= 4 * split and bn >= 32:
                        out.append(H.GemmConfig(bm, bn, H.gemm_max_stages(kind, bm, bn, accum=True), 16, num_sms,
                                                split_k=split))
    base = H.heuristic_gemm_config(kind, m, n, k, num_sms)
    if base not in out:
        out.append(base)
    return out


def _all_specs(args):
    from .. import heuristics as H
    from ..ops.gemm import gemm_spec
    specs = []
    for kind in args.kinds.split(","):
        for m, n, k in _shapes(args):
            cfgs = sweep_configs(kind, m, n, k) if args.tune else [H.gemm_config(kind, m, n, k, 132, "H100")]
            specs += [gemm_spec(kind, n, k, c) for c in cfgs]
    return list(dict.fromkeys(specs))


def _precompile(args):
    from ..warmup import warmup
    specs = _all_specs(args)
    t0 = time.time()
    outs = warmup(specs, "sm_90a", jobs=args.jobs, progress=False)
    bad = [o for o in outs if o.status == "failed"]
    print(f"precompiled {len(specs)} specs in {time.time() - t0:.1f} s; failed: {len(bad)}")
    for o in bad[:5]:
        print(o.spec.name, o.error[:500])
    return []


def _inputs(m, n, k, dev):
    import torch
    from ..reference.quant import quant_block, quant_token_group
    from ..ops.gemm import _sfa_mn_major
    x = torch.randn(m, k, device=dev)
    w = torch.randn(n, k, device=dev)
    qa, sa = quant_token_group(x)
    qb, sb = quant_block(w)
    return x.bfloat16(), w.bfloat16(), (qa, _sfa_mn_major(sa, m, sa.shape[1])), (qb, sb)


def run(args):
    import torch
    from .. import heuristics as H
    from ..ops.gemm import gemm_bf16_nt, gemm_fp8_nt, gemm_spec
    from ..reference.gemm import rel_err
    from ..runtime.arch import current_target
    from .common import H100_PEAK_TFLOPS, geomean, graph_time_us, print_table

    if args.precompile:
        return _precompile(args)
    dev = torch.device("cuda")
    target = current_target(dev)
    kinds = args.kinds.split(",")
    records, tuned = [], []
    for m, n, k in _shapes(args):
        xb, wb, a8, b8 = _inputs(m, n, k, dev)
        flops = 2.0 * m * n * k
        ref = (xb.float() @ wb.float().t()) if "bf16" in kinds else None
        ref8 = None
        if "fp8" in kinds:
            from ..reference.gemm import dequant_blocks
            from ..reference.quant import dequant_token_group
            ref8 = dequant_token_group(a8[0], a8[1]) @ dequant_blocks(b8[0], b8[1]).float().t()
        rec = {"m": m, "n": n, "k": k}
        for kind in kinds:
            fn = gemm_fp8_nt if kind == "fp8" else gemm_bf16_nt
            A, B = (a8, b8) if kind == "fp8" else (xb, wb)
            out = torch.empty(m, n, device=dev, dtype=torch.bfloat16)
            cfgs = sweep_configs(kind, m, n, k, target.num_sms) if args.tune else [
                H.gemm_config(kind, m, n, k, target.num_sms, target.name, target.smem_per_block)]
            best = None
            sweep = []
            for cfg in cfgs:
                if args.tune:
                    from ..runtime import compile_spec
                    p = compile_spec(gemm_spec(kind, n, k, cfg), "sm_90a")[0].meta["ptxas"]
                    if p.get("spill_stores") or p.get("stack_frame"):
                        continue  # a spilling candidate is not a shipping config
                try:
                    out.fill_(float("nan"))
                    fn(A, B, out=out, config=cfg)
                    err = rel_err(out.float(), ref8 if kind == "fp8" else ref)
                    us = graph_time_us(lambda i: fn(A, B, out=out, config=cfg), calls=args.calls, reps=args.reps)
                except Exception as e:  # a sweep candidate may fail to launch; record and move on
                    print(f"  {kind} {m}x{n}x{k} {cfg}: {type(e).__name__}: {str(e)[:200]}")
                    continue
                if err > 2e-3:
                    print(f"  WRONG {kind} {m}x{n}x{k} {cfg}: rel err {err:.2e}")
                    continue
                sweep.append([cfg.label(), round(us, 3)])
                if best is None or us < best[0]:
                    best = (us, cfg, err)
            if args.tune:
                rec[f"{kind}_sweep"] = sweep
            if best is None:
                rec[f"{kind}_us"] = None
                continue
            us, cfg, err = best
            rec.update({f"{kind}_us": us, f"{kind}_tflops": flops / us / 1e6, f"{kind}_err": err,
                        f"{kind}_cfg": cfg.label(),
                        f"{kind}_peak_frac": flops / us / 1e6 / H100_PEAK_TFLOPS[kind]})
            elem = 1 if kind == "fp8" else 2
            rec[f"{kind}_gbps"] = ((m * k + n * k) * elem + m * n * 2) / us / 1e3
            if args.tune:
                tuned.append({"kind": kind, "n": n, "k": k, "m_bucket": H.m_bucket(m), "block_m": cfg.block_m,
                              "block_n": cfg.block_n, "stages": cfg.stages, "group_n": cfg.group_n,
                              "cluster_m": cfg.cluster_m, "cluster_n": cfg.cluster_n, "split_k": cfg.split_k,
                              "us": us})
            if args.compile_times:
                from ..runtime.compiler import compile_cubin
                t0 = time.perf_counter()
                compile_cubin(gemm_spec(kind, n, k, cfg), "sm_90a")
                rec[f"{kind}_compile_s"] = time.perf_counter() - t0
        if not args.no_peers:
            if "fp8" in kinds:
                qa, qb = a8[0], b8[0]
                sa_row = torch.rand(m, 1, device=dev) + 0.5
                sb_row = torch.rand(1, n, device=dev) + 0.5
                o = torch._scaled_mm(qa, qb.t(), scale_a=sa_row, scale_b=sb_row, out_dtype=torch.bfloat16)
                us = graph_time_us(lambda i: torch._scaled_mm(qa, qb.t(), scale_a=sa_row, scale_b=sb_row,
                                                              out_dtype=torch.bfloat16), calls=args.calls, reps=args.reps)
                rec["cublas_fp8_us"] = us
                rec["cublas_fp8_tflops"] = flops / us / 1e6
                del o
            if "bf16" in kinds:
                us = graph_time_us(lambda i: torch.matmul(xb, wb.t()), calls=args.calls, reps=args.reps)
                rec["cublas_bf16_us"] = us
                rec["cublas_bf16_tflops"] = flops / us / 1e6
        if rec.get("fp8_us") and rec.get("cublas_fp8_us"):
            rec["fp8_vs_cublas"] = rec["cublas_fp8_us"] / rec["fp8_us"]
        if rec.get("bf16_us") and rec.get("cublas_bf16_us"):
            rec["bf16_vs_cublas"] = rec["cublas_bf16_us"] / rec["bf16_us"]
        if rec.get("fp8_us") and rec.get("cublas_bf16_us"):
            rec["fp8_vs_cublas_bf16"] = rec["cublas_bf16_us"] / rec["fp8_us"]
        dg = DEEPGEMM_FP8_TFLOPS.get((m, n, k))
        if dg and rec.get("fp8_tflops"):
            rec["deepgemm_fp8_tflops_anchor"] = dg
            rec["fp8_vs_deepgemm_anchor"] = rec["fp8_tflops"] / dg
        records.append(rec)
        print(json.dumps({k2: (round(v, 4) if isinstance(v, float) else v) for k2, v in rec.items()
                          if not k2.endswith("_sweep")}), flush=True)
        del xb, wb, a8, b8, ref, ref8
        torch.cuda.empty_cache()

    cols = [("M", "m", ""), ("N", "n", ""), ("K", "k", "")]
    if "fp8" in kinds:
        cols += [("fp8 cfg", "fp8_cfg", ""), ("fp8 us", "fp8_us", ".1f"), ("fp8 TFLOPS", "fp8_tflops", ".0f"),
                 ("fp8 GB/s", "fp8_gbps", ".0f"), ("%peak", "fp8_peak_frac", ".2f"),
                 ("cuBLAS fp8 TFLOPS", "cublas_fp8_tflops", ".0f"), ("x cuBLAS fp8", "fp8_vs_cublas", ".2f"),
                 ("x cuBLAS bf16", "fp8_vs_cublas_bf16", ".2f"),
                 ("x DeepGEMM (H100 anchor)", "fp8_vs_deepgemm_anchor", ".2f")]
    if "bf16" in kinds:
        cols += [("bf16 cfg", "bf16_cfg", ""), ("bf16 TFLOPS", "bf16_tflops", ".0f"),
                 ("cuBLAS bf16 TFLOPS", "cublas_bf16_tflops", ".0f"), ("x cuBLAS bf16", "bf16_vs_cublas", ".2f")]
    print_table(records, cols, title=f"GEMM on {target.name} (CUDA-graph replay, {args.calls} calls)")
    summary = {}
    for kind in kinds:
        g = geomean([r.get(f"{kind}_vs_cublas") for r in records])
        big = [r[f"{kind}_tflops"] for r in records if r["m"] >= 4096 and r.get(f"{kind}_tflops")]
        avg = sum(big) / len(big) if big else None
        summary[kind] = {"geomean_vs_cublas": g, "m4096_avg_tflops": avg}
        line = (f"{kind}: geomean vs cuBLAS {kind} = {g if g is None else round(g, 3)}; "
                f"M>=4096 average TFLOPS = {avg if avg is None else round(avg, 1)}")
        if kind == "fp8":
            gd = geomean([r.get("fp8_vs_deepgemm_anchor") for r in records])
            summary[kind]["geomean_vs_deepgemm_anchor"] = gd
            if gd:
                line += f"; geomean vs DeepGEMM (H100 anchor figures) = {gd:.3f}"
        print(line)
    if args.tune and tuned:
        path = Path(args.tune_out) if args.tune_out else H.tuning_path(target.name)
        old = []
        if path.is_file():
            try:
                old = json.loads(path.read_text()).get("entries", [])
            except ValueError:
                old = []
        keys = {(e["kind"], e["n"], e["k"], e["m_bucket"]) for e in tuned}
        entries = [e for e in old if (e["kind"], e["n"], e["k"], e["m_bucket"]) not in keys] + tuned
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"device": target.name, "entries": entries}, indent=1))
        print(f"wrote {len(tuned)} tuned entries to {path}")
    if getattr(args, "json", None):
        Path(args.json + ".summary.json").write_text(json.dumps(summary, indent=1))
    return records
