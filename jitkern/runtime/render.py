"""Template file + specialisation -> CUDA source text, and where templates live."""
from __future__ import annotations

import functools
import hashlib
import re
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


_INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)


def _included_headers(template: str) -> list[Path]:
    """The template and every header it includes with quotes from templates/, transitively
    (every #include line, whatever #if surrounds it: a superset is safe)."""
    root = templates_dir()
    seen, todo = {}, [template]
    while todo:
        rel = todo.pop()
        path = root / rel
        if rel in seen or not path.is_file():
            continue  # quoted includes outside templates/ (CUTLASS/CuTe) are the toolchain's
        seen[rel] = path
        todo += _INCLUDE.findall(path.read_text(errors="replace"))
    return [seen[k] for k in sorted(seen)]


@functools.lru_cache(maxsize=None)
def template_digest(template: str) -> str:
    """sha256 over the headers a template includes from templates/ (transitively, by its quoted
    #include lines) and every header of ``common/``. Part of the cache key, so editing a template
    or a header it includes recompiles what uses it; a sibling template it does not include,
    notes and scripts do not."""
    root = templates_dir()
    files = {p.relative_to(root): p for p in _included_headers(template)}
    for f in (root / "common").rglob("*"):
        if f.is_file() and f.suffix in _HEADER_SUFFIXES:
            files[f.relative_to(root)] = f
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(str(rel).encode())
        h.update(files[rel].read_bytes())
    return h.hexdigest()
