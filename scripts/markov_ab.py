"""markov_draft_exact (as built: lean grid barrier, and with -DJITKERN_BARRIER_LEAN=0) against the tensor-core
markov_draft on the bench's inputs (b = 1, 2; k = 7), three interleaved rounds, every output checked
equal to the default's: python3 scripts/markov_ab.py (GPU host); --pre compiles only.
Measured on the H200 (third 2026-12-01 session): b=1 exact 64.90 / 65.44 / 65.47 us, lean barrier
63.34 / 63.12 / 63.20, tensor-core 79.57 / 80.18 / 80.20; b=2 80.80 / 80.53 / 80.75, 78.70 / 78.91 /
78.91, 81.62 / 81.10 / 81.04 (then "exact" was the fenced barrier, the default until the fourth
session: now the lean one is, and the A/B builds the fenced one)."""
import dataclasses
import sys

sys.path.insert(0, "scripts")
import torch  # noqa: E402

from jitkern.ops import speculative as ops  # noqa: E402

_exact = ops.markov_exact_spec


def _fenced(*a, **kw):
    return dataclasses.replace(_exact(*a, **kw), defines=(("JITKERN_BARRIER_LEAN", "0"),))


def main():
    if "--pre" in sys.argv:
        from jitkern.runtime import compile_spec
        for sp in (_exact, _fenced):
            compile_spec(sp(torch.bfloat16, torch.int64, 128), "sm_90a")
        return
    from jitkern.bench.common import graph_time_us
    from markov_profile import markov_inputs
    for b in (1, 2):
        base, prev, w_in, w_out = markov_inputs(b, 7)
        ref = ops.markov_draft(base, prev, w_in, w_out, 0.0)
        res = {}
        for _ in range(3):
            for name, max_b, sp in (("exact", 2, _exact), ("exact fenced barrier", 2, _fenced), ("tensor-core", 0, _exact)):
                ops.MARKOV_EXACT_MAX_B, ops.markov_exact_spec = max_b, sp
                assert torch.equal(ops.markov_draft(base, prev, w_in, w_out, 0.0), ref), name
                res.setdefault(name, []).append(
                    graph_time_us(lambda i: ops.markov_draft(base, prev, w_in, w_out, 0.0), calls=10, reps=10))
        ops.markov_exact_spec = _exact
        print(f"b={b} k=7: " + "; ".join(f"{n} {' / '.join(f'{t:.2f}' for t in ts)} us" for n, ts in res.items()),
              flush=True)


if __name__ == "__main__":
    main()
