#!/usr/bin/env python3
"""A/B timing of fp8 GEMM tiles: per shape, the configured tile ("table") against explicit configs
(labels as `jitkern bench gemm` prints them: BMxBNxSTAGEScMN[sS], plus an optional gG for the
raster's N-group width, default 16, and an optional trailing b for a balanced grid: per shape, the
fewest CTAs that keep the 132-CTA grid's number of tile waves, as DeepGEMM launches, so every CTA
runs the same number of tiles and the rest of the SMs idle; then optional `:NAME=VALUE` build
defines of gemm.cuh, e.g. 256x128x3c21:JITKERN_GEMM_MCAST=0), ROUNDS interleaved rounds in one
process (their spread is the noise), cuBLAS fp8 row-wise in every round. Checks each config's output
against the table config's before timing (rel. error of the two, both against float64 is in the tests).
    GPU host:      python3 scripts/gemm_tile_ab.py [--rounds R] [--json PATH] CFG[,CFG..] [M,N,K ...]
    compile only:  python3 scripts/gemm_tile_ab.py --pre CFG[,CFG..] [M,N,K ...]
Default shapes: the six M = 4096 DeepSeek-V3 shapes of `jitkern bench gemm`.
"""
import dataclasses
import json
import re
import sys

from jitkern import heuristics as H
from jitkern.ops import gemm as G
from jitkern.runtime import compile_spec

SHAPES = [(4096, 2112, 7168), (4096, 24576, 1536), (4096, 32768, 512), (4096, 7168, 16384), (4096, 4096, 7168),
          (4096, 7168, 2048)]


def parse(text):
    """(config, balanced, defines) of a label."""
    label, *defs = text.split(":")
    m = re.fullmatch(r"(\d+)x(\d+)x(\d+)c(\d)(\d)(?:s(\d+))?(?:g(\d+))?(b?)", label)
    if not m or not all(re.fullmatch(r"JITKERN_\w+=\w+", d) for d in defs):
        raise SystemExit(f"config label {text!r}: expected BMxBNxSTAGEScMN[sS][gG][b][:JITKERN_NAME=VALUE ...]")
    bm, bn, st, cm, cn = map(int, m.groups()[:5])
    cfg = H.GemmConfig(bm, bn, st, int(m.group(7) or 16), 132, cm, cn, split_k=int(m.group(6) or 1))
    return cfg, m.group(8) == "b", tuple(tuple(d.split("=")) for d in defs)


_spec = G.gemm_spec


def spec_with(defines):
    """gemm_spec adding `defines` (the op builds its spec through G.gemm_spec)."""
    if not defines:
        return _spec
    def spec(*a, **kw):
        s = _spec(*a, **kw)
        return dataclasses.replace(s, defines=s.defines + defines)
    return spec


def balanced(cfg, m, n, sms=132):
    """cfg with num_sms = the fewest CTAs (whole clusters) that run its tiles of an m x n output in
    as many waves as `sms` CTAs do (ops/gemm.py caps the persistent grid at num_sms)."""
    cl = cfg.cluster_m * cfg.cluster_n
    units = -(-(-(-m // cfg.block_m)) // cfg.cluster_m) * -(-(-(-n // cfg.block_n)) // cfg.cluster_n) * cfg.split_k
    waves = -(-units // (sms // cl))
    return dataclasses.replace(cfg, num_sms=-(-units // waves) * cl)


def label(cfg, bal, defines=()):
    return f"{cfg.label()}g{cfg.group_n}" + ("b" if bal else "") + "".join(f":{k}={v}" for k, v in defines)


def main(argv):
    pre = "--pre" in argv
    rounds, jpath, args = 3, None, []
    it = iter(a for a in argv if a != "--pre")
    for a in it:
        if a == "--rounds":
            rounds = int(next(it))
        elif a == "--json":
            jpath = next(it)
        else:
            args.append(a)
    cfgs = [parse(c) for c in args[0].split(",")]  # (config, balanced, defines)
    shapes = [tuple(int(x) for x in a.split(",")) for a in args[1:]] or SHAPES
    if pre:
        for m, n, k in shapes:
            compile_spec(_spec("fp8", n, k, H.gemm_config("fp8", m, n, k, 132, "NVIDIA H100 80GB HBM3")), "sm_90a")
            for cfg, _, defs in cfgs:  # (the grid cap is not compiled in)
                compile_spec(spec_with(defs)("fp8", n, k, cfg), "sm_90a")
        return
    import torch
    from jitkern.bench.common import graph_time_us
    from jitkern.bench.gemm import _inputs
    from jitkern.reference.gemm import rel_err
    records = []
    for m, n, k in shapes:
        table = H.gemm_config("fp8", m, n, k, 132, torch.cuda.get_device_name())
        _, _, a8, b8 = _inputs(m, n, k, "cuda")
        sa, sb = torch.rand(m, 1, device="cuda") + 0.5, torch.rand(1, n, device="cuda") + 0.5
        runs = [("table " + table.label(), table, ())] + [
            (label(c, bal, defs), balanced(c, m, n) if bal else c, defs) for c, bal, defs in cfgs]
        ref = G.gemm_fp8_nt(a8, b8, config=table)
        outs = {}
        for lab, cfg, defs in runs:
            out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
            G.gemm_spec = spec_with(defs)
            try:
                G.gemm_fp8_nt(a8, b8, out=out, config=cfg)
            finally:
                G.gemm_spec = _spec
            err = rel_err(out.float(), ref.float())
            if not err <= 1e-2:
                raise SystemExit(f"{m}x{n}x{k} {lab}: output differs from the table config's (rel err {err:.3g})")
            outs[lab] = out
        times = {lab: [] for lab, _, _ in runs}
        times["cublas"] = []
        for _ in range(rounds):
            for lab, cfg, defs in runs:
                out = outs[lab]
                G.gemm_spec = spec_with(defs)
                try:
                    times[lab].append(graph_time_us(lambda i: G.gemm_fp8_nt(a8, b8, out=out, config=cfg),
                                                    calls=10, reps=10))
                finally:
                    G.gemm_spec = _spec
            times["cublas"].append(graph_time_us(lambda i: torch._scaled_mm(
                a8[0], b8[0].t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16), calls=10, reps=10))
        print(f"{m}x{n}x{k}: " + "; ".join(
            f"{lab} {' / '.join(f'{t:.1f}' for t in ts)} us (best {2 * m * n * k / min(ts) / 1e6:.0f} TFLOPS)"
            for lab, ts in times.items()), flush=True)
        for lab, ts in times.items():
            records.append({"m": m, "n": n, "k": k, "config": lab, "us": ts,
                            "grid_cap": {r[0]: r[1] for r in runs}[lab].num_sms if lab != "cublas" else None,
                            "best_tflops": 2 * m * n * k / min(ts) / 1e6})
    if jpath:
        with open(jpath, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
