"""Template file + specialisation -> CUDA source text, and where templates live."""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from .kernel_spec import KernelSpec

_PKG = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=None)
def templates_dir() -> Path:
    """``jitkern/templates`` in an installed wheel, ``<repo>/templates`` in a source checkout."""
    for cand in (_PKG / "templates", _PKG.parent / "templates"):
        if (cand / "common").is_dir():
            return cand
    raise FileNotFoundError(f"jitkern templates not found next to {_PKG}")


def render(spec: KernelSpec) -> str:
    """Source NVRTC compiles: the template included by path, instantiated through ``spec.name``
    (an NVRTC name expression), so compile errors point at real template lines."""
    path = templates_dir() / spec.template
    if not path.is_file():
        raise FileNotFoundError(f"template {spec.template!r} not found under {templates_dir()}")
    return f'// jitkern kernel: {spec.name}\n#include "{spec.template}"\n'


_HEADER_SUFFIXES = (".cuh", ".h", ".hpp", ".inl")


@functools.lru_cache(maxsize=None)
def template_digest(template: str) -> str:
    """sha256 over every header a template may include from templates/ (``.cuh``/``.h``/``.hpp``
    files of its own folder and ``common/``). Part of the cache key, so editing a template
    recompiles what uses it; notes and scripts beside the templates do not."""
    root = templates_dir()
    folders = sorted({(root / template).parent, root / "common"})
    h = hashlib.sha256()
    for folder in folders:
        for f in sorted(folder.rglob("*")):
            if f.is_file() and f.suffix in _HEADER_SUFFIXES:
                h.update(str(f.relative_to(root)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()
