"""Runtime costs: cold compile, warm-cache first launch, host launch overhead, quant kernel GB/s."""
from __future__ import annotations

import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from .common import graph_time_us, measure_copy_gbps, print_table

_FIRST_LAUNCH = r"""
import json, os, sys, time, torch
torch.empty(1, device="cuda"); torch.cuda.synchronize()   # CUDA context: not jitkern's cost
t0 = time.perf_counter()
import jitkern.ops.quant as q
t1 = time.perf_counter()
x = torch.randn(64, 7168, dtype=torch.bfloat16, device="cuda")
torch.cuda.synchronize()
t2 = time.perf_counter()
q.per_token_group_quant_fp8(x)
torch.cuda.synchronize()
t3 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "first_call_ms": (t3 - t2) * 1e3}))
"""


def add_args(p):
    p.add_argument("--skip-compile", action="store_true", help="skip the cold-compile measurement")
    p.add_argument("--jobs", type=int, default=None, help="warmup processes for the cold-compile pass")


def _cold_compile(jobs):
    from ..presets import PRESETS
    from ..runtime.arch import target_for_arch
    from ..warmup import specs_for_manifest, warmup
    with tempfile.TemporaryDirectory() as d:
        old = os.environ.get("JITKERN_CACHE_DIR")
        os.environ["JITKERN_CACHE_DIR"] = d
        try:
            specs = specs_for_manifest(PRESETS["deepseek-v3"], target_for_arch("sm_90a"))
            t0 = time.perf_counter()
            out = warmup(specs, "sm_90a", jobs=jobs, progress=False)
            wall = time.perf_counter() - t0
        finally:
            if old is None:
                del os.environ["JITKERN_CACHE_DIR"]
            else:
                os.environ["JITKERN_CACHE_DIR"] = old
    secs = sorted(o.seconds for o in out if o.status == "compiled")
    fams = {}
    for o in out:
        fams.setdefault(o.spec.family, []).append(o.seconds)
    return {"case": "cold compile (deepseek-v3 preset, sm_90a)", "kernels": len(out),
            "failed": sum(o.status == "failed" for o in out), "wall_s": wall,
            "median_s": statistics.median(secs) if secs else None, "max_s": max(secs) if secs else None,
            "per_family_median_s": {f: statistics.median(v) for f, v in fams.items()}}


def _first_launch():
    env = dict(os.environ)
    runs = []
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", _FIRST_LAUNCH], capture_output=True, text=True, env=env, check=True)
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return {"case": "warm cache, fresh process: first call (lookup + load + launch + sync)",
            "first_call_ms": statistics.median(r["first_call_ms"] for r in runs),
            "import_ms": statistics.median(r["import_ms"] for r in runs)}


def _host_overhead():
    import torch
    from ..ops import quant
    from ..runtime import KernelSpec, get_kernel
    x = torch.randn(16, 256, dtype=torch.bfloat16, device="cuda")
    quant.per_token_group_quant_fp8(x)
    k = get_kernel(KernelSpec("test/smoke.cuh", "jitkern::smoke_axpb<4>", family="test"))
    y = torch.empty(1024, device="cuda")
    xs = torch.empty(1024, device="cuda")
    args = [xs, y, ctypes.c_float(1.0), ctypes.c_float(0.0), ctypes.c_int32(1024)]
    n = 2000
    res = {}
    for name, fn in (("raw Kernel.launch", lambda: k.launch((1,), (256,), args)),
                     ("per_token_group_quant_fp8 call", lambda: quant.per_token_group_quant_fp8(x))):
        for _ in range(100):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        res[name] = (time.perf_counter() - t0) / n * 1e6
        torch.cuda.synchronize()
    return [{"case": f"host overhead: {k_}", "us_per_call": v} for k_, v in res.items()]


def _quant_bandwidth(copy_gbps):
    import torch
    from ..ops import quant
    from ..reference import quant as ref
    rows = []
    cases = [("token_group", 4096, 7168), ("token_group", 16384, 7168), ("token_group", 8192, 2048),
             ("token_group", 128, 7168), ("block", 7168, 18432), ("block", 4096, 7168)]
    for kind, m, k in cases:
        nsets = max(1, min(4, -(-(200 << 20) // (m * k * 3))))  # rotate >= ~200 MB: well past L2
        xs = [torch.randn(m, k, dtype=torch.bfloat16, device="cuda") for _ in range(nsets)]
        fn = quant.per_token_group_quant_fp8 if kind == "token_group" else quant.per_block_quant_fp8
        rfn = ref.quant_token_group if kind == "token_group" else ref.quant_block
        us = graph_time_us(lambda i: fn(xs[i]), calls=10, rotate=nsets)
        torch_us = graph_time_us(lambda i: rfn(xs[i]), calls=3, reps=5, rotate=nsets)
        nbytes = m * k * 2 + m * k + 4 * m * -(-k // 128) // (128 if kind == "block" else 1)
        gbps = nbytes / (us * 1e-6) / 1e9
        rows.append({"case": f"quant {kind}", "m": m, "k": k, "us": us, "gbps": gbps,
                     "ceiling_ratio": gbps / copy_gbps, "torch_us": torch_us, "speedup_vs_torch": torch_us / us})
    return rows


def run(args):
    import torch
    records = []
    if not args.skip_compile:
        records.append(_cold_compile(args.jobs))
        r = records[-1]
        print(f"cold compile, deepseek-v3 preset for sm_90a: {r['kernels']} kernels, failed {r['failed']}, "
              f"median {r['median_s']:.3f} s, max {r['max_s']:.3f} s, wall {r['wall_s']:.1f} s (goal: median <= 1.0 s)")
        print("  per family median s: " + ", ".join(f"{f} {v:.3f}" for f, v in r["per_family_median_s"].items()))
    if not torch.cuda.is_available():
        print("no GPU: launch and bandwidth measurements skipped")
        return records
    fl = _first_launch()
    records.append(fl)
    print(f"warm disk cache, fresh process, first call: {fl['first_call_ms']:.2f} ms (goal <= 20 ms); "
          f"import jitkern.ops.quant {fl['import_ms']:.1f} ms")
    for r in _host_overhead():
        records.append(r)
        print(f"{r['case']}: {r['us_per_call']:.2f} us (goal <= 10 us)")
    copy = measure_copy_gbps()
    rows = _quant_bandwidth(copy)
    records += rows
    print_table(rows, [("kernel", "case", ""), ("M/N", "m", "d"), ("K", "k", "d"), ("us", "us", ".1f"),
                       ("GB/s", "gbps", ".0f"), ("of copy ceiling", "ceiling_ratio", ".2f"),
                       ("plain torch us", "torch_us", ".1f"), ("speedup", "speedup_vs_torch", ".1f")],
                title=f"FP8 quantisation (copy ceiling measured now: {copy:.0f} GB/s; goal >= 0.80)")
    records.append({"case": "copy ceiling", "gbps": copy})
    return records
