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
ops._counters = lambda dev, n: bufs.append(torch.zeros(n + 2 * (128 + 3 * 256), dtype=torch.int32, device=dev)) or bufs[-1]
for _ in range(5):
    got = ops.markov_draft(base, prev, w_in, w_out, temp)
torch.cuda.synchronize()
assert torch.equal(got, ref_out), "traced kernel disagrees with the untraced one"
stamps = bufs[-1][ops.markov_scratch_words(b, k, bounds=not exact and temp == 0):].view(torch.int64).cpu()
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
if not exact and k > 1:  # warp 0's blocks at t = 1 (base tile waited for, block done), first pass
    for c, off in enumerate((0, 64)):
        h1 = (int(stamps[off + 7]) - t0) / 1e3
        det = [(int(stamps[off + 44 + i]) - t0) / 1e3 - h1 for i in range(16) if int(stamps[off + 44 + i])]
        print(f"t=1 {'first' if c == 0 else 'last'} CTA warp 0, us after h loaded: base ready / block done: "
              + " ".join(f"{det[i]:.2f}/{det[i + 1]:.2f}" for i in range(0, len(det) - 1, 2)))
    G = torch.cuda.get_device_properties(0).multi_processor_count
    h1 = int(stamps[7])
    per = [[(int(stamps[128 + p * G + c]) - h1) / 1e3 for c in range(G)] for p in range(3)]
    bar = (int(stamps[12]) - h1) / 1e3
    print("t=1 first CTA warp 0: block 0 operands in hand %.2f us after h loaded" % ((int(stamps[60]) - h1) / 1e3))
    for name, v in zip(("h loaded", "all scans", "recomputed"), per):
        q = sorted(v)
        print(f"t=1 every CTA, us after CTA 0's h loaded: {name}: min {q[0]:.2f} median {q[G // 2]:.2f} "
              f"p90 {q[int(G * 0.9)]:.2f} max {q[-1]:.2f} (CTA {v.index(q[-1])}); CTA 0 past the barrier {bar:.2f}")
end = (int(stamps[6 + 6 * (k - 1)]) - t0) / 1e3
print(f"total to last barrier {end:.2f} us, {end / k:.2f} us per position")
