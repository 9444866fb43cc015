"""Content-addressed, multi-process-safe disk cache of compiled cubins, and the in-process table
of loaded kernels.

Key: sha256 over the rendered source, the name expression, the NVRTC options (include folders
left out: machines differ in install roots, the header wheels' versions stand for their
content), the target arch, NVRTC and header-wheel versions, and a digest of the templates the
source may include. An entry is ``<dir>/<k[:2]>/<k>.cubin`` plus ``<k>.json`` (lowered name,
options, compile seconds, sizes, sha256 of the cubin, ptxas resource report).

Publishing writes a temp file in the same folder and ``os.replace``s it (readers never see a
partial file); a per-key ``fcntl`` lock makes N processes asking for one new kernel compile it
once. A cubin whose hash does not match its record is recompiled with a warning. A cache folder
that cannot be written (read-only, full) degrades to an in-memory cache with one warning.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import threading
import time
import warnings
from pathlib import Path

from .compiler import code_options, compile_cubin, toolchain_versions
from .kernel_spec import KernelSpec
from .render import render, template_digest


def cache_dir() -> Path:
    """``$JITKERN_CACHE_DIR`` or ``~/.cache/jitkern``."""
    env = os.environ.get("JITKERN_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "jitkern"


def cache_key(spec: KernelSpec, arch: str) -> str:
    opts = list(code_options(spec, arch))
    payload = {
        "source": render(spec), "name": spec.name, "options": opts, "arch": arch,
        "toolchain": toolchain_versions(), "templates": template_digest(spec.template),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclasses.dataclass
class Entry:
    key: str
    cubin: bytes
    meta: dict


def _ptxas_summary(log: str) -> dict:
    out = {}
    m = re.search(r"Used (\d+) registers", log)
    if m:
        out["registers"] = int(m.group(1))
    m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if m:
        out["spill_stores"], out["spill_loads"] = int(m.group(1)), int(m.group(2))
    m = re.search(r"(\d+) bytes stack frame", log)
    if m:
        out["stack_frame"] = int(m.group(1))
    # ptxas C751x "wgmma.mma_async instructions are serialized" (too few registers, accumulators read
    # inside a pipeline stage, ...): each wgmma waits for the previous, a silent ~30% loss; tests check it
    out["wgmma_serialized"] = "wgmma.mma_async instructions are serialized" in log
    return out


class DiskCache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else cache_dir()
        self._memory: dict[str, Entry] = {}
        self._degraded: str | None = None

    # -- paths
    def _paths(self, key: str):
        d = self.root / key[:2]
        return d, d / f"{key}.cubin", d / f"{key}.json"

    def _degrade(self, why: str):
        if self._degraded is None:
            self._degraded = why
            warnings.warn(f"jitkern: cache dir {self.root} is not usable ({why}); "
                          "compiled kernels are kept in memory for this process only", RuntimeWarning,
                          stacklevel=3)

    # -- read
    def get(self, key: str) -> Entry | None:
        if key in self._memory:
            return self._memory[key]
        _, cubin_p, meta_p = self._paths(key)
        try:
            meta = json.loads(meta_p.read_text())
            cubin = cubin_p.read_bytes()
        except (OSError, ValueError):
            return None
        if hashlib.sha256(cubin).hexdigest() != meta.get("cubin_sha256") or not meta.get("lowered_name"):
            warnings.warn(f"jitkern: cache entry {key[:16]} is corrupt (cubin hash mismatch); recompiling",
                          RuntimeWarning, stacklevel=3)
            return None
        return Entry(key, cubin, meta)

    # -- write
    def put(self, entry: Entry) -> None:
        self._memory_if_degraded(entry)
        if self._degraded:
            return
        d, cubin_p, meta_p = self._paths(entry.key)
        try:
            d.mkdir(parents=True, exist_ok=True)
            for path, data in ((cubin_p, entry.cubin), (meta_p, json.dumps(entry.meta, indent=1).encode())):
                tmp = d / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError, UnboundLocalError):
                tmp.unlink()
            self._degrade(f"{type(e).__name__}: {e.strerror or e}")
            self._memory[entry.key] = entry

    def _memory_if_degraded(self, entry):
        if self._degraded:
            self._memory[entry.key] = entry

    @contextlib.contextmanager
    def lock(self, key: str):
        """Exclusive per-key lock across processes; a no-op when the folder can't be written."""
        if self._degraded:
            yield
            return
        import fcntl
        try:
            locks = self.root / "locks"
            locks.mkdir(parents=True, exist_ok=True)
            fd = os.open(locks / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            self._degrade(f"{type(e).__name__}: {e.strerror or e}")
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- listing (CLI)
    def entries(self):
        """Yield (key, meta or None, cubin path) for each record on disk."""
        if not self.root.is_dir():
            return
        for meta_p in sorted(self.root.glob("??/*.json")):
            key = meta_p.stem
            try:
                meta = json.loads(meta_p.read_text())
            except (OSError, ValueError):
                meta = None
            yield key, meta, meta_p.with_suffix(".cubin")

    def clear(self) -> int:
        n = 0
        for key, _, cubin_p in list(self.entries()):
            for p in (cubin_p, cubin_p.with_suffix(".json"), self.root / "locks" / f"{key}.lock"):
                with contextlib.suppress(OSError):
                    p.unlink()
            n += 1
        return n


_caches: dict[Path, DiskCache] = {}


def default_cache() -> DiskCache:
    root = cache_dir()
    if root not in _caches:
        _caches[root] = DiskCache(root)
    return _caches[root]


def compile_spec(spec: KernelSpec, arch: str, cache: DiskCache | None = None):
    """Return ``(Entry, status)`` for ``spec`` on ``arch``; status is ``"cached"`` or ``"compiled"``.
    Compiles at most once across processes sharing the cache folder. Where ptxas serialised the
    spec's wgmma and the spec names a ``serialized_fallback``, the entry (and status) of the spec
    rebuilt with those macros added is returned instead (both variants stay cached)."""
    cache = cache or default_cache()
    entry, status = _compile_or_load(spec, arch, cache)
    if spec.serialized_fallback and entry.meta.get("ptxas", {}).get("wgmma_serialized"):
        alt = dataclasses.replace(spec, defines=tuple(spec.defines) + tuple(spec.serialized_fallback),
                                  serialized_fallback=())
        return _compile_or_load(alt, arch, cache)
    return entry, status


def _compile_or_load(spec: KernelSpec, arch: str, cache: DiskCache):
    key = cache_key(spec, arch)
    entry = cache.get(key)
    if entry is not None:
        return entry, "cached"
    with cache.lock(key):
        entry = cache.get(key)  # another process may have published it while we waited
        if entry is not None:
            return entry, "cached"
        res = compile_cubin(spec, arch)
        meta = {
            "name": spec.name, "template": spec.template, "family": spec.family, "arch": arch,
            "lowered_name": res.lowered_name, "options": list(code_options(spec, arch)),
            "compile_seconds": round(res.seconds, 4), "cubin_bytes": len(res.cubin),
            "cubin_sha256": hashlib.sha256(res.cubin).hexdigest(), "toolchain": toolchain_versions(),
            "created": time.time(), "ptxas": _ptxas_summary(res.log),
        }
        entry = Entry(key, res.cubin, meta)
        cache.put(entry)
        return entry, "compiled"


# In-process table of loaded kernels. The fast table is keyed by (device index, spec) so a hot
# call skips rendering and hashing; the slow one by (device index, cache key).
_loaded_by_spec: dict = {}
_loaded_by_key: dict = {}
_load_lock = threading.Lock()


def get_kernel(spec: KernelSpec, device=None):
    """Loaded :class:`~jitkern.runtime.launch.Kernel` for ``spec`` on ``device`` (an int, a
    ``torch.device`` or None for the current CUDA device), compiling on first use."""
    import torch
    if isinstance(device, torch.device):
        index = device.index
    elif isinstance(device, int) or device is None:
        index = device
    else:
        index = torch.device(device).index
    if index is None:
        index = torch.cuda.current_device()
    k = _loaded_by_spec.get((index, spec))
    if k is not None:
        return k
    from .arch import current_target
    from .launch import Kernel
    with _load_lock:
        k = _loaded_by_spec.get((index, spec))
        if k is not None:
            return k
        target = current_target(index)
        entry, _ = compile_spec(spec, target.arch)
        k = _loaded_by_key.get((index, entry.key))
        if k is None:
            k = Kernel.load(entry.cubin, entry.meta["lowered_name"], index, spec.name)
            _loaded_by_key[(index, entry.key)] = k
        _loaded_by_spec[(index, spec)] = k
        return k
