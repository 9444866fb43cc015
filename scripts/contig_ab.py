#!/usr/bin/env python3
"""A/B timing of the contiguous grouped FP8 GEMM with 128x128 against 256x128 tiles (gemm.cuh
ContigSlot) on the contiguous anchor cases of `jitkern bench grouped` (same inputs, built by its
contiguous_inputs), ROUNDS interleaved rounds in one process (their spread is the noise), CUDA-graph
timing. Every call's output is checked against the first config's (and the first round against
float32 math on the first and last group). The default config (jitkern.ops.gemm._grouped_config)
takes 256x128 from CONTIG_256_MIN_ROWS rows per group: these numbers decide that threshold.
    GPU host:                                   python3 scripts/contig_ab.py [--calls 5]
    compile only (fills $JITKERN_CACHE_DIR):    python3 scripts/contig_ab.py --pre
"""
import argparse

from jitkern import heuristics as H
from jitkern.bench.grouped import CONTIGUOUS, contiguous_inputs
from jitkern.ops import gemm as G
from jitkern.runtime import compile_spec

ROUNDS = 3
VARIANTS = [(f"{bm}x128", H.GemmConfig(bm, 128, H.gemm_max_stages("fp8", bm, 128))) for bm in (128, 256)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pre", action="store_true", help="compile the kernels only (no GPU needed)")
    p.add_argument("--calls", type=int, default=5, help="launches per captured graph")
    args = p.parse_args()
    if args.pre:
        for g, m, n, k in CONTIGUOUS:
            for name, cfg in VARIANTS:
                entry, status = compile_spec(G.gemm_spec("fp8", n, k, cfg, group_mode=1), "sm_90a")
                print(f"G={g} N={n} K={k} {name}: {status} {entry.meta['ptxas']}", flush=True)
        return
    import torch
    from jitkern.bench.common import graph_time_us
    summary = []
    for g, m, n, k in CONTIGUOUS:
        inp = contiguous_inputs("fp8", g, m, n, k)
        out, fnc, gi = inp["out"], inp["fnc"], inp["group_index"]
        flops = 2.0 * m * n * k
        default = G._grouped_config("fp8", max(65, out.shape[0] // g), g, n, k, _target(), None).label()
        res = {name: [] for name, _ in VARIANTS}
        ref = None
        for r in range(ROUNDS):
            for name, cfg in VARIANTS:
                out.fill_(float("nan"))
                fnc(cfg)
                if r == 0:
                    errs = inp["check_errs"]()
                    assert max(errs) < 1e-2, (name, errs)
                got = out.float()
                assert not torch.isnan(got).any(), f"{name}: rows left unwritten"
                assert (got[gi < 0] == 0).all(), f"{name}: padding rows not zero"
                if ref is None:
                    ref = got
                elif not torch.equal(got, ref):
                    err = ((got - ref).norm() / ref.norm()).item()
                    assert err < 1e-2, (name, err)
                    print(f"  {name}: differs from {VARIANTS[0][0]} by {err:.1e} (relative)")
                res[name].append(graph_time_us(lambda i, cfg=cfg, f=fnc: f(cfg), calls=args.calls, reps=7))
        best = {name: min(ts) for name, ts in res.items()}
        print(f"G={g} M={m} N={n} K={k} rows/group {m // g} (default {default}): " + "; ".join(
            f"{name} {' / '.join(f'{t:.1f}' for t in ts)} us (best {flops / best[name] / 1e6:.0f} TFLOPS)"
            for name, ts in res.items()) + f"; 256/128 best {best['256x128'] / best['128x128']:.3f}", flush=True)
        summary.append(best["256x128"] / best["128x128"])
        inp = out = fnc = gi = ref = got = None  # this case's tensors go before the next case's are built
        torch.cuda.empty_cache()
    print("256x128 / 128x128 time per case: " + " ".join(f"{x:.3f}" for x in summary))


def _target():
    import torch
    from jitkern.runtime.arch import current_target
    return current_target(torch.device("cuda"))


if __name__ == "__main__":
    main()
