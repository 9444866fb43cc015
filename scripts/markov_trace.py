"""Phase timeline of one markov_draft launch (diagnostic): python3 scripts/markov_trace.py B K [T] [exact].

Compiles the kernel with -DJITKERN_MARKOV_TRACE=1 (thread 0 of the first and last CTA stamps
%globaltimer at phase points, templates/spec/markov.cuh) and prints per position, in us from the
first CTA's start: h loaded, warp 0's scan done, all scans done, candidate list complete,
candidates recomputed, past the grid barrier. With "exact" (B = 1): markov_draft_exact, whose
stamps are h loaded, thread 0's rows done, rows reduced (three times), past the barrier."""
import dataclasses
import sys

import torch

from jitkern.ops import speculative as ops
from markov_profile import markov_inputs  # scripts/ is sys.path[0] when run as a script

b, k = int(sys.argv[1]), int(sys.argv[2])
temp = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
exact = len(sys.argv) > 4 and sys.argv[4] == "exact"
if not exact:
    ops.MARKOV_EXACT_MAX_B = 0  # every batch on the tensor-core kernel
base, prev, w_in, w_out = markov_inputs(b, k)
ref_out = ops.markov_draft(base, prev, w_in, w_out, temp)

spec_name = "markov_exact_spec" if exact else "markov_spec"
spec_fn = getattr(ops, spec_name)
setattr(ops, spec_name,
        lambda *a, **kw: dataclasses.replace(spec_fn(*a, **kw), defines=(("JITKERN_MARKOV_TRACE", "1"),)))
bufs = []
ops._counters = lambda dev, n: bufs.append(torch.zeros(n + 2 * 128, dtype=torch.int32, device=dev)) or bufs[-1]
for _ in range(5):
    got = ops.markov_draft(base, prev, w_in, w_out, temp)
torch.cuda.synchronize()
assert torch.equal(got, ref_out), "traced kernel disagrees with the untraced one"
stamps = bufs[-1][4 + 2 * k * b:].view(torch.int64).cpu()
t0 = int(stamps[0])
names = ["h loaded", "warp0 scan", "all scans", "listed", "candidates", "barrier"]
print(f"markov_draft b={b} k={k} T={temp}: us since CTA 0 start (first CTA | last CTA)")
prev_end = [0.0, (int(stamps[64]) - t0) / 1e3]
for t in range(k):
    row = []
    for c, off in enumerate((0, 64)):
        vals = [(int(stamps[off + 1 + 6 * t + i]) - t0) / 1e3 for i in range(6)]
        row.append(" ".join(f"{n}={v:7.2f}" for n, v in zip(names, vals)))
    print(f"t={t}: " + " | ".join(row))
end = (int(stamps[6 + 6 * (k - 1)]) - t0) / 1e3
print(f"total to last barrier {end:.2f} us, {end / k:.2f} us per position")
