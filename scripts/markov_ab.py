import dataclasses, sys
sys.path.insert(0, "scripts")
import torch
from jitkern.ops import speculative as ops
from jitkern.bench.common import graph_time_us
from markov_profile import markov_inputs
spec_fn = ops.markov_exact_spec
lean = lambda *a, **kw: dataclasses.replace(spec_fn(*a, **kw), defines=(("JITKERN_BARRIER_LEAN", "1"),))
if len(sys.argv) > 1:  # precompile
    from jitkern.runtime import compile_spec
    for d in (torch.bfloat16,):
        for t in (torch.int64,):
            compile_spec(lean(d, t, 128), "sm_90a"); compile_spec(spec_fn(d, t, 128), "sm_90a")
    sys.exit()
for b in (1, 2):
    base, prev, w_in, w_out = markov_inputs(b, 7)
    ref = ops.markov_draft(base, prev, w_in, w_out, 0.0)
    res = {}
    for rnd in range(3):
        for name, maxb, sp in (("exact", 2, spec_fn), ("exact lean barrier", 2, lean), ("tensor-core", 0, spec_fn)):
            ops.MARKOV_EXACT_MAX_B = maxb
            ops.markov_exact_spec = sp
            got = ops.markov_draft(base, prev, w_in, w_out, 0.0)
            assert torch.equal(got, ref), name
            res.setdefault(name, []).append(graph_time_us(lambda i: ops.markov_draft(base, prev, w_in, w_out, 0.0), calls=10, reps=10))
    ops.markov_exact_spec = spec_fn
    print(f"b={b} k=7: " + "; ".join(f"{n} {' / '.join(f'{t:.2f}' for t in ts)} us" for n, ts in res.items()), flush=True)
