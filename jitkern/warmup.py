"""Precompile every kernel a workload needs, in parallel processes, into the disk cache."""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import importlib
import json
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path

from .runtime.kernel_spec import KernelSpec

# Manifest family -> module with ``warmup_specs(entries, target) -> list[KernelSpec]``.
PROVIDERS = {
    "quant": "jitkern.ops.quant",
    "gemm": "jitkern.ops.gemm",
    "moe": "jitkern.ops.moe",
    "mla": "jitkern.ops.mla",
    "spec": "jitkern.ops.speculative",
}


def load_manifest(path: str) -> dict:
    """JSON or YAML shapes manifest: ``{family: [entry, ...]}``."""
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"manifest {path}: expected a mapping of family -> list of entries")
    return data


def specs_for_manifest(manifest: dict, target) -> list[KernelSpec]:
    specs, seen = [], set()
    for family, entries in manifest.items():
        if family not in PROVIDERS:
            raise ValueError(f"manifest: unknown family {family!r}; expected one of {sorted(PROVIDERS)}")
        mod = importlib.import_module(PROVIDERS[family])
        for spec in mod.warmup_specs(entries, target):
            if spec not in seen:
                seen.add(spec)
                specs.append(spec)
    return specs


@dataclasses.dataclass
class Outcome:
    spec: KernelSpec
    status: str          # "compiled" | "cached" | "failed"
    seconds: float       # NVRTC seconds (compiled) or lookup seconds (cached)
    error: str = ""
    rebuilt: bool = False  # ptxas serialised its wgmma: the spec's serialized_fallback build is the kernel


def _compile_one(spec: KernelSpec, arch: str) -> Outcome:
    from .runtime.cache import compile_spec
    from .runtime.compiler import JitCompileError
    t0 = time.perf_counter()
    try:
        entry, status = compile_spec(spec, arch)
    except JitCompileError as e:
        return Outcome(spec, "failed", time.perf_counter() - t0, f"{e.log.strip()[:2000]}\n  source: {e.source_path}")
    except Exception as e:  # a worker must report, not die
        return Outcome(spec, "failed", time.perf_counter() - t0, f"{type(e).__name__}: {e}")
    secs = entry.meta.get("compile_seconds", 0.0) if status == "compiled" else time.perf_counter() - t0
    rebuilt = bool(spec.serialized_fallback) and entry.meta.get("name") == spec.name and \
        any(f"-D{k}=" in o for k, _ in spec.serialized_fallback for o in entry.meta.get("options", []))
    return Outcome(spec, status, secs, rebuilt=rebuilt)


def warmup(specs: list[KernelSpec], arch: str, jobs: int | None = None, progress: bool = True) -> list[Outcome]:
    """Compile ``specs`` for ``arch`` with ``jobs`` processes (default: CPU count)."""
    if not specs:
        return []
    # Cache hits are answered here: spawning workers for them would cost more than the lookup.
    from .runtime.cache import cache_key, default_cache
    cache, done, todo = default_cache(), [], []
    for s in specs:
        t0 = time.perf_counter()
        (done if cache.get(cache_key(s, arch)) is not None else todo).append(s)
        if done and done[-1] is s:
            done[-1] = Outcome(s, "cached", time.perf_counter() - t0)
    specs = todo
    if not specs:
        return done
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(specs)))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(specs), desc=f"warmup {arch}", unit="kernel")
    out = []
    if jobs == 1:
        for s in specs:
            out.append(_compile_one(s, arch))
            if bar:
                bar.update(1)
    else:
        # spawn: the parent may hold a CUDA context, which a forked child must not inherit.
        with cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as ex:
            futs = [ex.submit(_compile_one, s, arch) for s in specs]
            for f in cf.as_completed(futs):
                out.append(f.result())
                if bar:
                    bar.update(1)
    if bar:
        bar.close()
    return done + out


def summarize(outcomes: list[Outcome], wall: float) -> dict:
    comp = [o.seconds for o in outcomes if o.status == "compiled"]
    return {
        "compiled": len(comp),
        "cached": sum(o.status == "cached" for o in outcomes),
        "failed": sum(o.status == "failed" for o in outcomes),
        "rebuilt": sum(o.rebuilt for o in outcomes),  # each also left its serialised first build cached
        "total_seconds": round(wall, 2),
        "compile_median_s": round(statistics.median(comp), 3) if comp else None,
        "compile_max_s": round(max(comp), 3) if comp else None,
    }
