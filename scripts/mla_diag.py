"""Which part bounds an MLA decode tile: the decode kernel rebuilt with diagnostic defines (wrong
results on purpose, mla.cuh JITKERN_MLA_DIAG_*): S over 36 / 18 / 0+ k16 steps, PV off, on the
128-head bench cases, for the wgmma and seesaw schedules; two interleaved rounds, CUDA-graph timing
(decode + combine). python3 scripts/mla_diag.py (GPU host); --pre compiles only.
If halving S's steps cuts a tile by ~half of S's share, S (Q and K streamed from shared memory)
bounds it; if dropping PV changes little, the softmax/exchange path does."""
import dataclasses
import sys

from jitkern.ops import mla

VARIANTS = {"real": (), "S 18 of 36 steps": (("JITKERN_MLA_DIAG_S_STEPS", "18"),),
            "S 1 step": (("JITKERN_MLA_DIAG_S_STEPS", "1"),), "no PV": (("JITKERN_MLA_DIAG_NO_PV", "1"),),
            "S 1 step, no PV": (("JITKERN_MLA_DIAG_S_STEPS", "1"), ("JITKERN_MLA_DIAG_NO_PV", "1"))}
IMPLS = ("wgmma", "wgmma_seesaw")
CASES = [(64, 4096, 128, 1), (128, 8192, 128, 2), (32, 4096, 128, 4)]


def _spec(impl, defines):
    return dataclasses.replace(mla.DECODE_SPECS[impl], defines=defines) if defines else mla.DECODE_SPECS[impl]


def main():
    if "--pre" in sys.argv:
        from jitkern.runtime import compile_spec
        for impl in IMPLS:
            for d in VARIANTS.values():
                print(impl, d, compile_spec(_spec(impl, d), "sm_90a")[0].meta["ptxas"], flush=True)
        return
    import torch
    from jitkern.bench.common import graph_time_us
    from jitkern.bench.mla import _make
    real = dict(mla.DECODE_SPECS)
    for b, s_k, h_q, s_q in CASES:
        q = torch.randn(b, s_q, h_q, 576, device="cuda", dtype=torch.bfloat16)
        sl = torch.full((b,), s_k, dtype=torch.int32, device="cuda")
        kv, bt = _make(b, s_k, h_q, s_q, 7)
        md = mla.mla_metadata(sl, s_q, h_q)
        res = {}
        for _ in range(2):
            for impl in IMPLS:
                for name, d in VARIANTS.items():
                    mla.DECODE_SPECS[impl] = _spec(impl, d)
                    try:
                        res.setdefault((impl, name), []).append(graph_time_us(
                            lambda i: mla.mla_decode(q, kv, bt, sl, md, impl=impl), calls=10, reps=10))
                    finally:
                        mla.DECODE_SPECS.update(real)
        for (impl, name), ts in res.items():
            print(f"b={b} s_k={s_k} h_q={h_q} s_q={s_q} {impl:13s} {name:18s} " +
                  " / ".join(f"{t:.1f}" for t in ts) + " us", flush=True)


if __name__ == "__main__":
    main()
