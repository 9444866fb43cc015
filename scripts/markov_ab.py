"""A/B of markov_draft build switches on the bench's inputs (k = 7), three interleaved rounds, every
output checked equal to the default build's (and once to the oracle): python3 scripts/markov_ab.py
[exact|tc|sampled] (GPU host); --pre compiles only.

sampled: the samplers of ops.MARKOV_SAMPLERS at temperature 1 (b = 2, 16, 64); their draws differ
by design, so each is only checked to be deterministic and in range (distributions: the GPU tests).

exact: markov_draft_exact (b = 1, 2) as built (lean grid barrier) and with -DJITKERN_BARRIER_LEAN=0,
against the tensor-core kernel. tc (default): the tensor-core kernel (b = 16, 64) as built; add
entries to VARIANTS["tc"] (build defines, or a copy of the header as another template) to compare
(templates/spec/markov.cuh).
Measured figures: templates/spec/NOTES.md."""
import dataclasses
import sys

sys.path.insert(0, "scripts")
import torch  # noqa: E402

from jitkern.ops import speculative as ops  # noqa: E402
from jitkern.reference import speculative as ref  # noqa: E402

_exact, _tc = ops.markov_exact_spec, ops.markov_spec


def _with(fn, defines):
    return lambda *a, **kw: dataclasses.replace(fn(*a, **kw), defines=defines)


# name -> (MARKOV_EXACT_MAX_B, attribute of ops to patch, spec function)
VARIANTS = {
    "exact": {"exact": (2, "markov_exact_spec", _exact),
              "exact fenced barrier": (2, "markov_exact_spec", _with(_exact, (("JITKERN_BARRIER_LEAN", "0"),))),
              "tensor-core": (0, "markov_exact_spec", _exact)},
    "tc": {"default": (0, "markov_spec", _tc),
           "own bound": (0, "markov_spec", _with(_tc, (("JITKERN_MARKOV_GLOBAL_LB", "0"),))),
           "stream w": (0, "markov_spec", _with(_tc, (("JITKERN_MARKOV_KEEP_W", "0"),))),
           "h from smem": (0, "markov_spec", _with(_tc, (("JITKERN_MARKOV_HOLD_H", "0"),))),
           "exact by one thread": (0, "markov_spec", _with(_tc, (("JITKERN_MARKOV_QUAD_EXACT", "0"),)))},
}
BATCHES = {"exact": (1, 2), "tc": (2, 16, 64), "sampled": (2, 16, 64)}


def sampled(pre):
    if pre:
        from jitkern.runtime import compile_spec
        for smp in ops.MARKOV_SAMPLERS:
            for b in BATCHES["sampled"]:
                compile_spec(_tc(torch.bfloat16, torch.int64, 128, True, ops.markov_mtiles(b, 128), True, sampler=smp),
                             "sm_90a")
        return
    from jitkern.bench.common import graph_time_us
    from markov_profile import markov_inputs
    for b in BATCHES["sampled"]:
        base, prev, w_in, w_out = markov_inputs(b, 7)
        V = w_out.shape[0]
        res = {}
        for _ in range(3):
            for smp in ops.MARKOV_SAMPLERS:
                saved, ops.MARKOV_SAMPLER = ops.MARKOV_SAMPLER, smp
                try:
                    got = ops.markov_draft(base, prev, w_in, w_out, 1.0, seed=3)
                    assert torch.equal(got, ops.markov_draft(base, prev, w_in, w_out, 1.0, seed=3)), smp
                    assert bool(((got >= 0) & (got < V)).all()), smp
                    res.setdefault(smp, []).append(
                        graph_time_us(lambda i: ops.markov_draft(base, prev, w_in, w_out, 1.0, seed=i), calls=10, reps=10))
                finally:
                    ops.MARKOV_SAMPLER = saved
        print(f"sampled b={b} k=7: " + "; ".join(f"{n} {' / '.join(f'{t:.2f}' for t in ts)} us" for n, ts in res.items()),
              flush=True)


def main():
    if "sampled" in sys.argv[1:]:
        return sampled("--pre" in sys.argv)
    mode = next((a for a in sys.argv[1:] if a in VARIANTS), "tc")
    if "--pre" in sys.argv:
        from jitkern.runtime import compile_spec
        for max_b, attr, sp in VARIANTS[mode].values():
            for b in BATCHES[mode]:
                args = ((torch.bfloat16, torch.int64, 128) if attr == "markov_exact_spec" else
                        (torch.bfloat16, torch.int64, 128, False, ops.markov_mtiles(b, 128), True))
                compile_spec(sp(*args), "sm_90a")
        return
    from jitkern.bench.common import graph_time_us
    from markov_profile import markov_inputs
    for b in BATCHES[mode]:
        base, prev, w_in, w_out = markov_inputs(b, 7)
        want = None
        res = {}
        for _ in range(3):
            for name, (max_b, attr, sp) in VARIANTS[mode].items():
                saved = getattr(ops, attr)
                ops.MARKOV_EXACT_MAX_B = max_b
                setattr(ops, attr, sp)
                try:
                    got = ops.markov_draft(base, prev, w_in, w_out, 0.0)
                    if want is None:
                        want = got
                        assert torch.equal(got, ref.markov_draft_greedy(base, prev, w_in, w_out)), "oracle"
                    assert torch.equal(got, want), name
                    res.setdefault(name, []).append(
                        graph_time_us(lambda i: ops.markov_draft(base, prev, w_in, w_out, 0.0), calls=10, reps=10))
                finally:
                    setattr(ops, attr, saved)
        print(f"b={b} k=7: " + "; ".join(f"{n} {' / '.join(f'{t:.2f}' for t in ts)} us" for n, ts in res.items()),
              flush=True)


if __name__ == "__main__":
    main()
