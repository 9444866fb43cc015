#!/usr/bin/env python3
"""A/B timing of the FP8 GEMM's pipelined promotion (on where gemm.cuh's kPipelined allows it)
against JITKERN_GEMM_PIPELINE=0, two rounds in one process (the spread between rounds is the noise),
with cuBLAS fp8 row-wise as the reference.
    GPU host:                                   python3 scripts/gemm_pipeline_ab.py
    compile only (fills $JITKERN_CACHE_DIR):    python3 scripts/gemm_pipeline_ab.py pre
"""
import sys

import torch

from jitkern import heuristics as H
from jitkern.bench.common import graph_time_us
from jitkern.bench.gemm import _inputs
from jitkern.ops import gemm as G
from jitkern.runtime import KernelSpec, compile_spec

SHAPES = [(4096, 4096, 7168), (128, 7168, 16384), (4096, 24576, 1536)]
CFGS = [H.GemmConfig(bm, bn, H.gemm_max_stages("fp8", bm, bn)) for bm, bn in ((128, 128), (64, 128), (256, 96))]
_spec = G.gemm_spec


def _nopipe_spec(kind, n, k, cfg, accum=False, group_mode=0):
    s = _spec(kind, n, k, cfg, accum, group_mode)
    return KernelSpec(s.template, s.name, (("JITKERN_GEMM_PIPELINE", "0"),), "gemm")


def main(pre: bool):
    for m, n, k in SHAPES:
        if pre:
            for cfg in CFGS:
                compile_spec(_spec("fp8", n, k, cfg), "sm_90a")
                compile_spec(_nopipe_spec("fp8", n, k, cfg), "sm_90a")
            continue
        _, _, a8, b8 = _inputs(m, n, k, "cuda")
        out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        sa, sb = torch.rand(m, 1, device="cuda") + 0.5, torch.rand(1, n, device="cuda") + 0.5
        lines = []
        for rnd in range(2):
            for cfg in CFGS:
                for name, spec in (("pipe", _spec), ("nopipe", _nopipe_spec)):
                    G.gemm_spec = spec  # the op builds its spec through this name
                    us = graph_time_us(lambda i: G.gemm_fp8_nt(a8, b8, out=out, config=cfg), calls=10, reps=10)
                    lines.append(f"r{rnd} {cfg.label()} {name}: {us:.1f} us {2 * m * n * k / us / 1e6:.0f} TFLOPS")
            G.gemm_spec = _spec
            us = graph_time_us(lambda i: torch._scaled_mm(a8[0], b8[0].t(), scale_a=sa, scale_b=sb,
                                                          out_dtype=torch.bfloat16), calls=10, reps=10)
            lines.append(f"r{rnd} cublas: {us:.1f} us {2 * m * n * k / us / 1e6:.0f} TFLOPS")
        print(f"{m}x{n}x{k}", *lines, sep="\n  ", flush=True)


if __name__ == "__main__":
    main(len(sys.argv) > 1 and sys.argv[1] == "pre")
