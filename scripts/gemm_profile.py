#!/usr/bin/env python3
"""Profile helper for the FP8 GEMM mainloop (GPU host): times a few configs of one shape by graph
replay, then runs each once more for ncu (3 warm-ups are launched first; profile with
`ncu --launch-skip 3 --launch-count 3 -k regex:'gemm|xmma|sm90'`).

    python3 scripts/gemm_profile.py M N K [--time] [--cfg BM,BN,STAGES,CM,CN ...]
Without --cfg: the GPU's configured tile and its 2x1 cluster variant.
"""
import sys

import torch

from jitkern import heuristics as H
from jitkern.bench.common import graph_time_us
from jitkern.bench.gemm import _inputs
from jitkern.ops.gemm import gemm_fp8_nt


def main():
    m, n, k = (int(x) for x in sys.argv[1:4])
    _, _, a8, b8 = _inputs(m, n, k, "cuda")
    out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    given = [a.split(",") for a in sys.argv[sys.argv.index("--cfg") + 1:]] if "--cfg" in sys.argv else []
    if given:
        cfgs = [H.GemmConfig(int(bm), int(bn), int(st), 16, 132, int(cm), int(cn)) for bm, bn, st, cm, cn in given]
    else:
        base = H.gemm_config("fp8", m, n, k, 132, torch.cuda.get_device_name())
        cfgs = [base, H.GemmConfig(base.block_m, base.block_n, base.stages, 16, 132, 2, 1)]
    xa = torch.randint(-8, 8, (m, k), device="cuda").to(torch.float8_e4m3fn)
    xb = torch.randint(-8, 8, (n, k), device="cuda").to(torch.float8_e4m3fn)
    sa, sb = torch.rand(m, 1, device="cuda"), torch.rand(1, n, device="cuda")
    runs = [lambda c=c: gemm_fp8_nt(a8, b8, out=out, config=c) for c in cfgs]
    runs.append(lambda: torch._scaled_mm(xa, xb.t(), sa, sb, out_dtype=torch.bfloat16))
    if "--time" in sys.argv:
        for name, f in zip([str(c) for c in cfgs] + ["cublas rowwise"], runs):
            us = graph_time_us(lambda i: f(), calls=10, reps=10)
            print(f"{name}: {us:.1f} us  {2 * m * n * k / us / 1e6:.0f} TFLOPS")
        return
    for f in runs:  # warm-ups (compile, load), then the profiled launches
        f()
    torch.cuda.synchronize()
    for f in runs:
        f()
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
