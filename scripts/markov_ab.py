"""markov_draft_exact against the tensor-core markov_draft on the bench's inputs (b = 1, 2; k = 7),
three interleaved rounds, outputs checked equal: python3 scripts/markov_ab.py (GPU host).
Measured on the H200 (third 2026-12-01 session) with a -D switch for the grid barrier in place:
b=1 exact 64.9-65.5 us, exact with the release/acquire barrier 63.1-63.3, tensor-core 79.6-80.2;
b=2 80.5-80.8 / 78.7-78.9 / 81.0-81.6."""
import sys

sys.path.insert(0, "scripts")
import torch  # noqa: E402

from jitkern.bench.common import graph_time_us  # noqa: E402
from jitkern.ops import speculative as ops  # noqa: E402
from markov_profile import markov_inputs  # noqa: E402

for b in (1, 2):
    base, prev, w_in, w_out = markov_inputs(b, 7)
    ref = ops.markov_draft(base, prev, w_in, w_out, 0.0)
    res = {}
    for _ in range(3):
        for name, max_b in (("exact", 2), ("tensor-core", 0)):
            ops.MARKOV_EXACT_MAX_B = max_b
            assert torch.equal(ops.markov_draft(base, prev, w_in, w_out, 0.0), ref), name
            res.setdefault(name, []).append(
                graph_time_us(lambda i: ops.markov_draft(base, prev, w_in, w_out, 0.0), calls=10, reps=10))
    print(f"b={b} k=7: " + "; ".join(f"{n} {' / '.join(f'{t:.2f}' for t in ts)} us" for n, ts in res.items()), flush=True)
