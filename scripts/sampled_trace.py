"""Timeline of one verify_sampled launch (diagnostic): python3 scripts/sampled_trace.py B K [T] [--pre]
[--set KNOB=VALUE ...].

Compiles verify_sampled with -DJITKERN_SAMPLED_TRACE=1 (thread 0 of every CTA stamps %globaltimer
at tile boundaries, templates/spec/sampled.cuh) on the bench's inputs (V = 129280 bf16 logits, ~70%
of drafts set to the argmax, q = softmax of fresh logits) and prints, in us from the first CTA's
start: CTA starts, when the A tiles (logits statistics) finish, when each B tile sees all of its
request's A tiles arrived, when the request's first B tile has computed the decision (rows merged,
accept chain), when the B tiles (the race over the emitted row) finish, when the token is written
and when each CTA exits. Checks the traced kernel's outputs against the untraced one's.
--pre: compile both kernels only (no GPU needed; fills $JITKERN_CACHE_DIR)."""
import ast
import sys

import torch

from jitkern.ops import speculative as ops

from sampled_ab import variant_spec  # noqa: E402 (scripts/ is on sys.path when run as a script)

traced_spec = variant_spec(defines=(("JITKERN_SAMPLED_TRACE", "1"),))


def main(argv):
    # --set NAME=VALUE (repeatable): an ops knob for this run, e.g. --set SAMPLED_MIN_BLOCKS=3
    while "--set" in argv:
        i = argv.index("--set")
        name, value = argv[i + 1].split("=", 1)
        setattr(ops, name, ast.literal_eval(value))
        del argv[i:i + 2]
    if "--pre" in argv:
        from jitkern.runtime import compile_spec
        for spec in (ops.sampled_spec(torch.bfloat16, torch.int64, torch.int32, True),
                     traced_spec(torch.bfloat16, torch.int64, torch.int32, True)):
            compile_spec(spec, "sm_90a")
        return
    b, k = int(argv[0]), int(argv[1])
    temp = float(argv[2]) if len(argv) > 2 else 1.0
    V, rows, n = 129280, b * (k + 1), b * k
    g = torch.Generator(device="cuda").manual_seed(0)
    logits = torch.randn(rows, V, device="cuda", generator=g).to(torch.bfloat16)
    drafts = torch.randint(0, V, (n,), device="cuda", generator=g)
    am = logits.view(b, k + 1, V)[:, :k].argmax(-1).reshape(-1)
    drafts = torch.where(torch.rand(n, device="cuda", generator=g) < 0.7, am, drafts)
    q = torch.softmax(torch.randn(n, V, device="cuda", generator=g), -1)
    cu = torch.arange(b + 1, device="cuda", dtype=torch.int32) * k
    ref = ops.verify_sampled(logits, drafts, q, cu, temperature=temp, seed=7)

    ops.sampled_spec = traced_spec
    slots = ops._num_sms(torch.cuda.current_device()) * ops.SAMPLED_MIN_BLOCKS
    splits, _, splits_b, _ = ops.sampled_launch_tiles(rows, b, V, slots)
    grid = min(slots, rows * splits + b * splits_b)
    tiles_a, nb = rows * splits, b * splits_b
    n_stamps = 2 * grid + tiles_a + 2 * b + 2 * nb
    base = ops.sampled_sync_words(b)  # int32 offset of the stamps (u64) after the counters and race slots
    buf = torch.zeros(base + 2 * n_stamps + 1024, dtype=torch.int32, device="cuda")
    ops._counters = lambda dev, size: buf
    for _ in range(3):
        got = ops.verify_sampled(logits, drafts, q, cu, temperature=temp, seed=7)
    torch.cuda.synchronize()
    assert all(torch.equal(x, y) for x, y in zip(got, ref)), "traced kernel disagrees with the untraced one"
    st = buf[base:base + 2 * n_stamps].view(torch.int64).cpu().double()
    t0 = st[:grid].min()
    us = (st - t0) / 1e3
    o = 0

    def take(m):
        nonlocal o
        o += m
        return us[o - m:o]

    start, exit_, a_done, dec, b_seen, b_done, tok = (take(m) for m in (grid, grid, tiles_a, b, nb, nb, b))

    def q5(x):
        x = x.sort().values
        return " / ".join(f"{float(x[int(f * (len(x) - 1))]):7.2f}" for f in (0.0, 0.1, 0.5, 0.9, 1.0))

    print(f"verify_sampled b={b} k={k} T={temp}: grid {grid}, A tiles {tiles_a} ({splits} per row), "
          f"B tiles {nb} ({splits_b} per request); us since the first CTA start, min / p10 / median / p90 / max")
    for name, x in (("CTA start", start), ("A tile done", a_done), ("B saw A arrivals", b_seen), ("decision", dec),
                    ("B tile done", b_done), ("token written", tok), ("CTA exit", exit_)):
        print(f"  {name:15s} {q5(x)}")
    last_a = a_done.view(rows, splits).max(1).values.view(b, k + 1).max(1).values
    seen0 = b_seen.view(b, splits_b)[:, 0]  # the request's first B tile, the one that stamps `decision`
    print(f"  per request: decision - its last A tile {q5(dec - last_a)}; token - decision {q5(tok - dec)}")
    print(f"  decision: A arrivals seen {q5(seen0 - last_a)}; rows + accept chain {q5(dec - seen0)}")


if __name__ == "__main__":
    main(sys.argv[1:])
