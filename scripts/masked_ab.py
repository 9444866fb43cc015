#!/usr/bin/env python3
"""A/B timing of masked grouped FP8 GEMM tile variants on the bench's expected_m = 192 cases (same
row draw as `jitkern bench grouped`), ROUNDS interleaved rounds in one process (their spread is the
noise): 256x128 (the default) against 128x128, and against a variant of 256x128 compiled with a
-D switch of gemm.cuh given as AB_DEFINE=NAME=VALUE in the environment.
    GPU host:                                   python3 scripts/masked_ab.py
    compile only (fills $JITKERN_CACHE_DIR):    python3 scripts/masked_ab.py pre
    one call of each default kernel, for ncu:   python3 scripts/masked_ab.py prof
Measured with it on 2026-12-01 (H200) and dropped: an odd last 64-row block split by columns
between the warpgroups (~30% slower: ptxas serialised its wgmma, C7511); A loaded per 64-row block,
skipping the blocks past the rows (0-10% slower: four 64-row TMA boxes per stage).
"""
import os
import random
import sys

from jitkern import heuristics as H
from jitkern.bench.grouped import MASKED, MAX_M, _quant_b
from jitkern.ops import gemm as G
from jitkern.runtime import compile_spec
from gemm_define_ab import _variant as variant_of  # scripts/ is sys.path[0] when run as a script

CASES = [c for c in MASKED if c[1] == 192]
ROUNDS = 4
_spec = G.gemm_spec


VARIANT_DEFINE = tuple(os.environ["AB_DEFINE"].split("=")) if os.environ.get("AB_DEFINE") else None  # NAME=VALUE


def _variant_spec(default):
    return _spec if default else variant_of(VARIANT_DEFINE)


VARIANTS = [("256x128", H.GemmConfig(256, 128, 4), True), ("128x128", H.GemmConfig(128, 128, 6), True)]
if VARIANT_DEFINE:
    VARIANTS.insert(1, ("256x128 variant", H.GemmConfig(256, 128, 4), False))


def main(pre: bool, prof: bool = False):
    if pre:
        for g, em, n, k in CASES:
            for _, cfg, so in VARIANTS:
                compile_spec(_variant_spec(so)("fp8", n, k, cfg, group_mode=2), "sm_90a")
        return
    import torch
    from jitkern.bench.common import graph_time_us
    from jitkern.ops.quant import per_token_group_quant_fp8
    rng = random.Random(0)
    for g, em, n, k in CASES:
        counts = [max(1, min(MAX_M, int(em * rng.uniform(0.7, 1.3)))) for _ in range(g)]
        mm = torch.tensor(counts, dtype=torch.int32, device="cuda")
        x = torch.randn(g, MAX_M, k, device="cuda", dtype=torch.bfloat16)
        qa, sa = per_token_group_quant_fp8(x.view(g * MAX_M, k))
        a, b = (qa.view(g, MAX_M, k), sa), _quant_b(torch.randn(g, n, k, device="cuda", dtype=torch.bfloat16) * 0.05)
        out = torch.empty(g, MAX_M, n, device="cuda", dtype=torch.bfloat16)
        rows = sum(counts)
        nbytes = rows * k + g * n * k + rows * n * 2
        if prof:
            for _ in range(4):  # 3 warm-ups, then the profiled call (ncu --launch-skip 3 --launch-count 1)
                G.grouped_gemm_fp8_masked(a, b, mm, em, out=out)
            torch.cuda.synchronize()
            continue
        res = {name: [] for name, _, _ in VARIANTS}
        ref = None
        for _ in range(ROUNDS):
            for name, cfg, so in VARIANTS:
                G.gemm_spec = _variant_spec(so)
                fn = lambda i, cfg=cfg: G.grouped_gemm_fp8_masked(a, b, mm, em, out=out, config=cfg)  # noqa: E731
                out.fill_(float("nan"))
                fn(0)
                got = torch.cat([out[i, :c] for i, c in enumerate(counts)]).float()
                if ref is None:
                    ref = got
                assert torch.equal(got, ref) or (got - ref).norm() / ref.norm() < 1e-2, name
                res[name].append(graph_time_us(fn, calls=10, reps=7))
                G.gemm_spec = _spec
        print(f"G={g} expected_m={em} rows={rows} N={n} K={k}: " + "; ".join(
            f"{name} {' / '.join(f'{t:.1f}' for t in ts)} us (best {nbytes / min(ts) / 1e3:.0f} GB/s)" for name, ts in res.items()))


if __name__ == "__main__":
    main(len(sys.argv) > 1 and sys.argv[1] == "pre", len(sys.argv) > 1 and sys.argv[1] == "prof")
