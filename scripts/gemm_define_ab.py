#!/usr/bin/env python3
"""A/B timing of a gemm.cuh compile-time switch: each FP8 shape's configured tile built as is
against the same tile built with -DNAME=VALUE, ROUNDS interleaved rounds in one process (their
spread is the noise; the first round usually runs coolest), cuBLAS fp8 row-wise as the reference.
    GPU host:                                   python3 scripts/gemm_define_ab.py NAME=VALUE [M,N,K ...]
    compile only (fills $JITKERN_CACHE_DIR):    python3 scripts/gemm_define_ab.py NAME=VALUE --pre [M,N,K ...]
Default shapes: the six M = 4096 DeepSeek-V3 shapes of `jitkern bench gemm`. (The pipelined-promotion
A/B of templates/gemm/NOTES.md is JITKERN_GEMM_PIPELINE=0 here.)
"""
import dataclasses
import sys

from jitkern import heuristics as H
from jitkern.ops import gemm as G
from jitkern.runtime import compile_spec

ROUNDS = 3
SHAPES = [(4096, 2112, 7168), (4096, 24576, 1536), (4096, 32768, 512), (4096, 7168, 16384), (4096, 4096, 7168),
          (4096, 7168, 2048)]
_spec = G.gemm_spec


def _variant(define):
    def spec(kind, n, k, cfg, accum=False, group_mode=0):
        s = _spec(kind, n, k, cfg, accum, group_mode)
        return dataclasses.replace(s, defines=s.defines + (define,))
    return spec


def main(argv):
    name, value = argv[0].split("=")
    pre = "--pre" in argv
    shapes = [tuple(int(x) for x in a.split(",")) for a in argv[1:] if a != "--pre"] or SHAPES
    variant = _variant((name, value))
    if pre:
        for m, n, k in shapes:
            cfg = H.gemm_config("fp8", m, n, k, 132, "NVIDIA H200")
            for sp in (_spec, variant):
                compile_spec(sp("fp8", n, k, cfg), "sm_90a")
        return
    import torch
    from jitkern.bench.common import graph_time_us
    from jitkern.bench.gemm import _inputs
    for m, n, k in shapes:
        cfg = H.gemm_config("fp8", m, n, k, 132, torch.cuda.get_device_name())
        _, _, a8, b8 = _inputs(m, n, k, "cuda")
        out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        sa, sb = torch.rand(m, 1, device="cuda") + 0.5, torch.rand(1, n, device="cuda") + 0.5
        times = {"default": [], argv[0]: [], "cublas": []}
        for _ in range(ROUNDS):
            for label, sp in (("default", _spec), (argv[0], variant)):
                G.gemm_spec = sp  # the op builds its spec through this name
                times[label].append(graph_time_us(lambda i: G.gemm_fp8_nt(a8, b8, out=out, config=cfg), calls=10, reps=10))
            G.gemm_spec = _spec
            times["cublas"].append(graph_time_us(lambda i: torch._scaled_mm(a8[0], b8[0].t(), scale_a=sa, scale_b=sb,
                                                                            out_dtype=torch.bfloat16), calls=10, reps=10))
        print(f"{m}x{n}x{k} {cfg.label()}: " + "; ".join(
            f"{lab} {' / '.join(f'{t:.1f}' for t in ts)} us (best {2 * m * n * k / min(ts) / 1e6:.0f} TFLOPS)"
            for lab, ts in times.items()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
