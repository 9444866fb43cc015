"""NVRTC compilation (cuda.bindings.nvrtc): include paths from the installed header wheels,
options, name expressions -> lowered names, cubin out. No nvcc, no CUDA toolkit, no GPU needed.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.metadata as md
import os
import sys
import tempfile
import time
from pathlib import Path

from .kernel_spec import KernelSpec
from .render import render, templates_dir


class JitCompileError(RuntimeError):
    """NVRTC rejected a kernel. ``log`` holds NVRTC's full output, ``source_path`` the dumped
    source (with the options used, as a comment) for reproducing the failure."""

    def __init__(self, kernel_name: str, log: str, source_path: str, options=()):
        self.kernel_name, self.log, self.source_path, self.options = kernel_name, log, source_path, list(options)
        super().__init__(f"NVRTC failed to compile {kernel_name}\n  source: {source_path}\n{log.strip()}")


def _wheel_file_dir(dist: str, suffix: str) -> Path:
    """Folder holding the file of wheel ``dist`` whose path ends with ``suffix``. Found through the
    wheel's RECORD, so it works whatever root the wheel was installed under (site-packages,
    --target dirs, editable installs)."""
    try:
        files = md.files(dist) or []
    except md.PackageNotFoundError as e:
        raise RuntimeError(f"jitkern needs the {dist!r} wheel for its headers: pip install {dist}") from e
    for f in files:
        p = str(f).replace("\\", "/")
        if p.endswith(suffix):
            full = Path(f.locate()).resolve()
            return Path(str(full)[: -len(suffix)].rstrip("/"))
    raise RuntimeError(f"wheel {dist!r} is installed but has no file ending in {suffix!r}")


@functools.lru_cache(maxsize=None)
def include_dirs() -> tuple:
    """Include folders, in search order: templates/, CUDA headers (cuda_fp8.h ...), CCCL (libcu++,
    given both as its folder and parent: CUTLASS under CUDA 13 includes ``<cccl/cuda/std/...>``),
    CUTLASS/CuTe."""
    cccl = _wheel_file_dir("nvidia-cuda-cccl", "cuda/std/cstdint")
    return (
        str(templates_dir()),
        str(_wheel_file_dir("nvidia-cuda-runtime", "cuda_fp8.h")),
        str(cccl),
        str(cccl.parent),
        str(_wheel_file_dir("nvidia-cutlass", "cute/tensor.hpp")),
    )


def _dist_versions(names) -> dict:
    """Installed versions of ``names``, read off ``*.dist-info`` folder names along sys.path (one
    listdir per entry, first match wins as for imports): ~10x cheaper than importlib.metadata on
    the first cached-kernel lookup of a process. Falls back to importlib.metadata."""
    want = {n.replace("-", "_").lower(): n for n in names}
    found = {}
    for entry in sys.path:
        try:
            items = os.listdir(entry or ".")
        except OSError:
            continue
        for it in items:
            if it.endswith(".dist-info"):
                name, _, ver = it[:-10].partition("-")
                dist = want.get(name.lower())
                if dist and dist not in found:
                    found[dist] = ver
    for n in names:
        if n not in found:
            try:
                found[n] = md.version(n)
            except md.PackageNotFoundError:
                found[n] = None
    return found


@functools.lru_cache(maxsize=None)
def toolchain_versions() -> dict:
    """Versions that change generated code: NVRTC and every header wheel. Part of the cache key.
    Read from wheel metadata so a cache hit never loads libnvrtc; NVRTC is asked only when its
    wheel is absent (a system NVRTC)."""
    out = _dist_versions(("nvidia-cuda-nvrtc", "nvidia-cuda-runtime", "nvidia-cuda-cccl", "nvidia-cutlass"))
    if out["nvidia-cuda-nvrtc"] is None:
        from cuda.bindings import nvrtc
        _, major, minor = nvrtc.nvrtcVersion()
        out["nvrtc"] = f"{major}.{minor}"
    return out


BASE_OPTIONS = ("-std=c++17", "-default-device", "-DNDEBUG", "--device-int128",
                "-Xptxas=-v", "-DCUTLASS_ENABLE_GDC_FOR_SM90=0")


def code_options(spec: KernelSpec, arch: str) -> tuple:
    """Options that shape the generated code (the cache key's part); include folders excluded,
    since install roots differ between machines while the wheels' versions pin their content."""
    opts = [f"--gpu-architecture={arch}", *BASE_OPTIONS]
    if os.environ.get("JITKERN_LINEINFO"):
        opts.append("-lineinfo")
    opts += [f"-D{k}={v}" for k, v in spec.defines]
    return tuple(opts)


def options_for(spec: KernelSpec, arch: str) -> tuple:
    return code_options(spec, arch) + tuple(f"-I{d}" for d in include_dirs())


@dataclasses.dataclass
class CompileResult:
    cubin: bytes
    lowered_name: str
    log: str
    seconds: float


def _check(result, what, prog=None):
    err = result[0]
    from cuda.bindings import nvrtc
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"{what} failed: {err}")
    return result[1:] if len(result) > 2 else (result[1] if len(result) == 2 else None)


def _program_log(prog) -> str:
    from cuda.bindings import nvrtc
    _, size = nvrtc.nvrtcGetProgramLogSize(prog)
    buf = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, buf)
    return buf.rstrip(b"\x00 ").decode(errors="replace")


def dump_source(spec: KernelSpec, source: str, options) -> str:
    """Write the source (and, as comments, the options) for a failed compile; return its path."""
    d = Path(tempfile.gettempdir()) / "jitkern-failed"
    d.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() else "_" for c in spec.name)[:80]
    path = d / f"{safe}_{os.getpid()}.cu"
    header = "// options: " + " ".join(options) + "\n"
    path.write_text(header + source + f"\n// instantiates: {spec.name}\n")
    return str(path)


def compile_cubin(spec: KernelSpec, arch: str) -> CompileResult:
    """Compile ``spec`` for ``arch``; raise JitCompileError with NVRTC's log on failure."""
    from cuda.bindings import nvrtc
    source = render(spec)
    options = options_for(spec, arch)
    t0 = time.perf_counter()
    prog = _check(nvrtc.nvrtcCreateProgram(source.encode(), b"jitkern_kernel.cu", 0, [], []),
                  "nvrtcCreateProgram")
    try:
        _check(nvrtc.nvrtcAddNameExpression(prog, spec.name.encode()), "nvrtcAddNameExpression")
        err, = nvrtc.nvrtcCompileProgram(prog, len(options), [o.encode() for o in options])
        log = _program_log(prog)
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise JitCompileError(spec.name, log, dump_source(spec, source, options), options)
        lowered = _check(nvrtc.nvrtcGetLoweredName(prog, spec.name.encode()), "nvrtcGetLoweredName")
        lowered = lowered.decode() if isinstance(lowered, bytes) else lowered
        _, size = nvrtc.nvrtcGetCUBINSize(prog)
        cubin = b" " * size
        _check(nvrtc.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    return CompileResult(bytes(cubin), lowered, log, time.perf_counter() - t0)
