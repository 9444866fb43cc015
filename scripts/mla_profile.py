#!/usr/bin/env python3
"""Per-kernel GPU times of mla_decode (decode and combine kernels) for bench cases, from
torch.profiler over a few calls, next to the graph-replayed time of the whole call. Tells how much
of a case's excess over its bandwidth floor is the combine kernel and the gap between the two.
    GPU host: python3 scripts/mla_profile.py [b:s_k:h_q:s_q ...] [--impl NAME] [--parts N] [--combine warp|R,G,S]
(--parts: mla_metadata's num_parts instead of default_num_parts; --combine: the warp combine kernel or
the ring kernel's rows per CTA, groups per row and stages instead of ops.mla.COMBINE_CONFIGS)
"""
import sys

import torch

from jitkern.bench.common import graph_time_us
from jitkern.bench.mla import _make
from jitkern.ops import mla


def main(argv):
    impl = argv[argv.index("--impl") + 1] if "--impl" in argv else None
    parts = int(argv[argv.index("--parts") + 1]) if "--parts" in argv else None
    if "--combine" in argv:
        arg = argv[argv.index("--combine") + 1]
        cfg = arg if arg == "warp" else tuple(int(v) for v in arg.split(","))
        mla.COMBINE_CONFIGS.update(narrow=cfg, wide=cfg)
    cases = [tuple(int(v) for v in a.split(":")) for a in argv if ":" in a] or [(64, 4096, 16, 2), (64, 4096, 128, 1)]
    for b, s_k, h_q, s_q in cases:
        q = torch.randn(b, s_q, h_q, 576, device="cuda", dtype=torch.bfloat16)
        sl = torch.full((b,), s_k, dtype=torch.int32, device="cuda")
        kv, bt = _make(b, s_k, h_q, s_q, 7)
        md = mla.mla_metadata(sl, s_q, h_q, num_parts=parts)
        out = torch.empty(b, s_q, h_q, 512, device="cuda", dtype=torch.bfloat16)
        lse = torch.empty(b, h_q, s_q, device="cuda", dtype=torch.float32)
        call = lambda: mla.mla_decode(q, kv, bt, sl, md, out=(out, lse), impl=impl)  # noqa: E731
        whole = graph_time_us(lambda i: call(), calls=10, reps=10)
        for _ in range(3):
            call()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                call()
            torch.cuda.synchronize()
        times = {}
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                times.setdefault(e.name.split("<")[0].split("(")[0][-40:], []).append(e.device_time)
        kern = "; ".join(f"{k} {sum(v) / len(v):.1f} us x{len(v) // 10}" for k, v in times.items())
        print(f"b={b} s_k={s_k} h_q={h_q} s_q={s_q} impl={impl or mla.default_impl(b, s_q, h_q, md.num_parts)} parts={md.num_parts} combine={mla.COMBINE_CONFIGS}: "
              f"graph {whole:.1f} us per call; kernels: {kern}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
