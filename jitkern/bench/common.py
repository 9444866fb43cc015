"""Timing, ceilings, tables and JSON for the bench commands.

Kernel time is measured by CUDA-graph replay: ``calls`` back-to-back launches captured in one
graph, the graph replayed ``reps`` times between CUDA events; the median over replays divided by
``calls`` is the per-call time. That leaves host launch latency out, which matters below ~100 us.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

# Datasheet dense peaks, H100 SXM (TFLOP/s); measured ceilings come from measure_copy_gbps().
H100_PEAK_TFLOPS = {"fp8": 1979.0, "bf16": 989.0}


def graph_time_us(fn, calls: int = 20, reps: int = 15, warmup: int = 3, rotate: int = 1) -> float:
    """Median per-call microseconds of ``fn(i)`` (``i`` cycles over ``range(rotate)``, for
    rotating input sets larger than L2) captured ``calls`` times in a CUDA graph."""
    import torch
    for i in range(max(warmup, rotate)):
        fn(i % rotate)
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    g = torch.cuda.CUDAGraph()
    with torch.cuda.stream(s):
        with torch.cuda.graph(g, stream=s):
            for i in range(calls):
                fn(i % rotate)
    torch.cuda.current_stream().wait_stream(s)
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000.0 / calls)
    return statistics.median(times)


def event_time_us(fn, iters: int = 30, warmup: int = 3) -> float:
    """Median microseconds of ``fn()`` between CUDA events, one sync per iteration (includes host
    launch latency: use for calls that cannot be captured)."""
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000.0)
    return statistics.median(times)


_copy_gbps = None


def measure_copy_gbps() -> float:
    """Device-to-device copy bandwidth (bytes read + written per second / 1e9), this GPU, now:
    the best of cudaMemcpy-backed copies of 256 MiB, 1 GiB and 2 GiB."""
    global _copy_gbps
    if _copy_gbps is None:
        import torch
        best = 0.0
        for nbytes in (256 << 20, 1 << 30, 2 << 30):
            src = torch.randn(nbytes // 4, device="cuda")
            dst = torch.empty_like(src)
            us = graph_time_us(lambda i: dst.copy_(src), calls=5, reps=7)
            best = max(best, 2 * nbytes / (us * 1e-6) / 1e9)
            del src, dst
        _copy_gbps = best
    return _copy_gbps


def print_table(rows: list[dict], columns: list[tuple], title: str = ""):
    """``columns``: (header, key, format) triples; missing values print as '-'."""
    if title:
        print(f"\n{title}")
    cells = [[h for h, _, _ in columns]]
    for r in rows:
        line = []
        for _, k, fmt in columns:
            v = r.get(k)
            line.append("-" if v is None else (format(v, fmt) if fmt else str(v)))
        cells.append(line)
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    for j, c in enumerate(cells):
        print("| " + " | ".join(x.rjust(w) for x, w in zip(c, widths)) + " |")
        if j == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def write_json(path, records: list[dict], meta: dict | None = None):
    if not path:
        return
    import torch
    doc = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
           "meta": meta or {}, "records": records}
    Path(path).write_text(json.dumps(doc, indent=1))
    print(f"wrote {len(records)} records to {path}")


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return statistics.geometric_mean(xs) if xs else None
