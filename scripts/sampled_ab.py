"""verify_sampled variants (ops knobs) on the bench inputs (V = 129280 bf16, temperature 1, no
filter): python3 scripts/sampled_ab.py [--pre] [--cases 1x7,16x7,64x7,256x3] [--rounds 3]. Variants
(VARIANTS: name -> {ops knob: value}) run interleaved per round, CUDA-graph replay over rotating
inputs. `same`: fraction of calls whose outputs equal the first variant's (same seed). --pre:
compile the variants' kernels only (no GPU). Edit VARIANTS for the A/B at hand.
"""
import dataclasses
import sys

import torch

from jitkern.ops import speculative as ops

_sampled_spec = ops.sampled_spec


class variant_spec:
    """ops.sampled_spec with another header (e.g. spec/sampled_prev.cuh: a copy of an earlier
    commit's header made for the A/B) and/or extra -D switches, for a VARIANTS entry (a class, not a
    closure, so that --pre can pickle it)."""
    def __init__(self, template=None, defines=()):
        self.template, self.defines = template, tuple(defines)

    def __call__(self, *args, **kw):
        s = _sampled_spec(*args, **kw)
        return dataclasses.replace(s, template=self.template or s.template, defines=tuple(s.defines) + self.defines)


VARIANTS = {
    "default": {},
    "prefetch 2 passes ahead": {"SAMPLED_AHEAD": 2},
}


class knobs:
    def __init__(self, values):
        self.values = values

    def __enter__(self):
        self.saved = {n: getattr(ops, n) for n in self.values}
        for n, v in self.values.items():
            setattr(ops, n, v)

    def __exit__(self, *exc):
        for n, v in self.saved.items():
            setattr(ops, n, v)


def _compile(values):
    from jitkern.runtime import compile_spec
    with knobs(values):
        compile_spec(ops.sampled_spec(torch.bfloat16, torch.int64, torch.int32, True, False), "sm_90a")


def inputs(b, k, V, rot):
    """The bench's inputs: bf16 logits [b(k+1), V], q = softmax of fresh logits, drafts = the target
    argmax with probability 0.7 else uniform, cu [b+1]."""
    g = torch.Generator(device="cuda").manual_seed(0)
    n = b * k
    logits = [torch.randn(b * (k + 1), V, device="cuda", generator=g).to(torch.bfloat16) for _ in range(rot)]
    dr = []
    for x in logits:
        am = x.view(b, k + 1, V)[:, :k].argmax(-1).reshape(-1)
        d = torch.randint(0, V, (n,), device="cuda", generator=g)
        dr.append(torch.where(torch.rand(n, device="cuda", generator=g) < 0.7, am, d))
    q = [torch.softmax(torch.randn(n, V, device="cuda", generator=g), -1) for _ in range(rot)]
    return logits, q, dr, torch.arange(b + 1, device="cuda", dtype=torch.int32) * k


def main(argv):
    if "--pre" in argv:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(2) as ex:
            list(ex.map(_compile, VARIANTS.values()))
        return
    from jitkern.bench.common import graph_time_us
    cases = argv[argv.index("--cases") + 1] if "--cases" in argv else "1x7,16x7,64x7,256x3"
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 3
    V = 129280
    for case in cases.split(","):
        b, k = (int(x) for x in case.split("x"))
        rot = max(2, min(16, -(-200_000_000 // (b * (k + 1) * V * 2 + b * k * V * 4))))
        logits, q, dr, cu = inputs(b, k, V, rot)

        def call(i):
            return ops.verify_sampled(logits[i], dr[i], q[i], cu, 1.0, seed=i, max_num_draft=k)
        ref, res, same = None, {}, {}
        for _ in range(rounds):
            for name, values in VARIANTS.items():
                with knobs(values):
                    outs = [call(i) for i in range(rot)]
                    torch.cuda.synchronize()
                    if ref is None:
                        ref = outs
                    same[name] = sum(bool(torch.equal(a[0], r[0]) and torch.equal(a[1], r[1]))
                                     for a, r in zip(outs, ref)) / rot
                    res.setdefault(name, []).append(graph_time_us(call, rotate=rot))
        print(f"b={b} k={k}: " + " | ".join(f"{nm} " + "/".join(f"{u:.1f}" for u in v) + f" same {same[nm]:.2f}"
                                           for nm, v in res.items()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
