"""`jitkern warmup`, `jitkern cache list|stats|clear|verify`, `jitkern doctor`."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time


def _resolve_arch(arch):
    from .runtime.arch import current_target, gpu_available, target_for_arch
    if arch:
        return target_for_arch(arch)
    if not gpu_available():
        raise SystemExit("jitkern: no GPU visible; pass --arch sm_90a to compile without one")
    return current_target()


def cmd_warmup(args):
    from .presets import PRESETS
    from .warmup import load_manifest, specs_for_manifest, summarize, warmup
    if args.manifest and args.preset:
        raise SystemExit("jitkern warmup: give --preset or --manifest, not both")
    if args.manifest:
        manifest = load_manifest(args.manifest)
    else:
        name = args.preset or "deepseek-v3"
        if name not in PRESETS:
            raise SystemExit(f"jitkern warmup: unknown preset {name!r}; known: {', '.join(PRESETS)}")
        manifest = PRESETS[name]
    target = _resolve_arch(args.arch)
    specs = specs_for_manifest(manifest, target)
    print(f"jitkern warmup: {len(specs)} kernels for {target.arch} -> {_cache_root()}")
    t0 = time.perf_counter()
    outcomes = warmup(specs, target.arch, jobs=args.jobs, progress=not args.no_progress)
    summary = summarize(outcomes, time.perf_counter() - t0)
    for o in outcomes:
        if o.status == "failed":
            print(f"FAILED {o.spec.name}:\n{o.error}\n", file=sys.stderr)
    print(f"compiled {summary['compiled']}, cached {summary['cached']}, failed {summary['failed']} "
          f"in {summary['total_seconds']:.1f} s" + (f" (compile median {summary['compile_median_s']} s, "
                                                   f"max {summary['compile_max_s']} s)" if summary["compiled"] else "")
          + (f"; {summary['rebuilt']} rebuilt with their fallback macros (ptxas serialised their wgmma)"
             if summary["rebuilt"] else ""))
    if args.json:
        recs = [{"name": o.spec.name, "family": o.spec.family, "status": o.status, "seconds": round(o.seconds, 4),
                 "rebuilt": o.rebuilt} for o in outcomes]
        with open(args.json, "w") as f:
            json.dump({"arch": target.arch, "summary": summary, "records": recs}, f, indent=1)
    return 1 if summary["failed"] else 0


def _cache_root():
    from .runtime.cache import cache_dir
    return cache_dir()


def cmd_cache(args):
    from .runtime.cache import DiskCache
    cache = DiskCache()
    if args.action == "clear":
        print(f"removed {cache.clear()} entries from {cache.root}")
        return 0
    rows = list(cache.entries())
    if args.action == "list":
        print(f"{'key':16}  {'family':8} {'arch':7} {'compile s':>9} {'bytes':>8} {'regs':>4} {'spill':>5}  name")
        for key, meta, _ in rows:
            if meta is None:
                print(f"{key[:16]}  (unreadable record)")
                continue
            p = meta.get("ptxas", {})
            print(f"{key[:16]}  {meta.get('family', ''):8} {meta.get('arch', ''):7} {meta.get('compile_seconds', 0):9.3f} "
                  f"{meta.get('cubin_bytes', 0):8d} {p.get('registers', '-'):>4} {p.get('spill_stores', '-'):>5}  {meta.get('name')}")
        return 0
    if args.action == "stats":
        fams = {}
        total = 0
        for _, meta, cubin in rows:
            fam = (meta or {}).get("family") or "?"
            fams[fam] = fams.get(fam, 0) + 1
            total += cubin.stat().st_size if cubin.exists() else 0
        print(f"cache dir: {cache.root}\nentries: {len(rows)}\nbytes: {total}")
        for fam, n in sorted(fams.items()):
            print(f"  {fam}: {n}")
        return 0
    if args.action == "verify":
        bad = 0
        for key, meta, cubin in rows:
            ok = meta is not None and cubin.exists() and \
                hashlib.sha256(cubin.read_bytes()).hexdigest() == meta.get("cubin_sha256")
            if not ok:
                bad += 1
                print(f"corrupt: {key}")
                if args.fix:
                    for p in (cubin, cubin.with_suffix(".json")):
                        p.unlink(missing_ok=True)
        print(f"verified {len(rows)} entries: {len(rows) - bad} ok, {bad} corrupt" + (" (removed)" if args.fix and bad else ""))
        return 1 if bad and not args.fix else 0
    return 2


def cmd_doctor(args):
    import importlib.metadata as md
    from . import __version__
    from .runtime.arch import gpu_available
    from .runtime.compiler import include_dirs
    print(f"jitkern {__version__}  python {platform.python_version()}  ({sys.executable})")
    for dist in ("torch", "cuda-bindings", "nvidia-cuda-nvrtc", "nvidia-cuda-runtime", "nvidia-cuda-cccl", "nvidia-cutlass"):
        try:
            v = md.version(dist)
        except md.PackageNotFoundError:
            v = "NOT INSTALLED"
        print(f"  {dist:22} {v}")
    from cuda.bindings import nvrtc
    _, major, minor = nvrtc.nvrtcVersion()
    print(f"  nvrtc (loaded)         {major}.{minor}")
    print("include dirs:")
    for d in include_dirs():
        print(f"  {d}")
    root = _cache_root()
    writable = os.access(root if root.exists() else root.parent if root.parent.exists() else "/", os.W_OK)
    print(f"cache dir: {root} ({'writable' if writable else 'NOT writable: in-memory cache'})")
    from .runtime import KernelSpec, compile_spec
    spec = KernelSpec("test/smoke.cuh", "jitkern::smoke_axpb<4>", family="test")
    t0 = time.perf_counter()
    _, status = compile_spec(spec, "sm_90a")
    print(f"smoke compile for sm_90a: {status} in {time.perf_counter() - t0:.3f} s")
    if not gpu_available():
        print("GPU: none visible (compile-only mode: pass --arch sm_90a to warmup)")
        return 0
    import ctypes
    import torch
    from .runtime import current_target, get_kernel
    t = current_target()
    print(f"GPU: {t.name}  arch {t.arch}  SMs {t.num_sms}  smem/block {t.smem_per_block}  L2 {t.l2_bytes >> 20} MiB")
    x = torch.randn(1000, device="cuda")
    y = torch.full_like(x, float("nan"))
    get_kernel(spec).launch((2,), (128,), [x, y, ctypes.c_float(2.0), ctypes.c_float(1.0), ctypes.c_int32(1000)])
    ok = torch.equal(y, x * 2 + 1)
    print(f"smoke launch: {'ok' if ok else 'WRONG RESULT'}")
    return 0 if ok else 1


def cmd_tune(args):
    """`jitkern tune gemm [...]` = `jitkern bench gemm --tune [...]`: measure candidate configs per
    shape on this GPU and write the winners to tuning/gemm_<gpu>.json (read by the heuristic)."""
    from .cli import main
    return main(["bench", args.family, "--tune", *args.rest])


def add_commands(sub):
    t = sub.add_parser("tune", help="measure candidate kernel configs on this GPU and write the winners to tuning/")
    t.add_argument("family", choices=["gemm"])
    t.add_argument("rest", nargs="...", help="further `jitkern bench gemm` options (--tune-out PATH, --json PATH, ...)")
    t.set_defaults(func=cmd_tune)

    w = sub.add_parser("warmup", help="precompile the kernels a workload needs into the disk cache")
    w.add_argument("--preset", help="built-in shapes manifest (default: deepseek-v3)")
    w.add_argument("--manifest", help="JSON/YAML file {family: [entries]} (see jitkern/presets.py)")
    w.add_argument("--arch", help="target such as sm_90a (default: the current GPU)")
    w.add_argument("-j", "--jobs", type=int, default=None, help="parallel compile processes (default: CPU count)")
    w.add_argument("--no-progress", action="store_true", help="no progress bar")
    w.add_argument("--json", metavar="PATH", help="write per-kernel outcomes and the summary as JSON")
    w.set_defaults(func=cmd_warmup)

    c = sub.add_parser("cache", help="inspect or clear the compiled-kernel cache ($JITKERN_CACHE_DIR)")
    c.add_argument("action", choices=["list", "stats", "clear", "verify"])
    c.add_argument("--fix", action="store_true", help="with verify: delete corrupt entries")
    c.set_defaults(func=cmd_cache)

    d = sub.add_parser("doctor", help="versions, header locations, cache dir, GPU and a smoke compile")
    d.set_defaults(func=cmd_doctor)
