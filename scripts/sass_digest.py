#!/usr/bin/env python3
"""SASS digest of every kernel a warmup preset compiles (sm_90a, no GPU), one line per kernel:
`<digest> <name>`. Diff two runs to show which kernels a header change touched; a kernel whose
digest is unchanged runs the instructions it ran before. Needs nvdisasm (pip install
nvidia-cuda-nvdisasm). Uses $JITKERN_CACHE_DIR like every other command.
    python3 scripts/sass_digest.py [--preset deepseek-v3 | --manifest shapes.json] [--family spec] > before.txt
"""
import argparse
import hashlib
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from sass_tools import disassemble, nvdisasm  # noqa: E402

from jitkern.presets import PRESETS  # noqa: E402
from jitkern.runtime import compile_spec  # noqa: E402
from jitkern.runtime.arch import target_for_arch  # noqa: E402
from jitkern.warmup import load_manifest, specs_for_manifest  # noqa: E402


def digest(cubin: bytes, tool: str) -> str:
    text = disassemble(cubin, tool)
    # instructions only: addresses, encodings and section names vary with unrelated symbols
    body = "\n".join(m.group(1).strip() for m in re.finditer(r"/\*[0-9a-f]{4,}\*/\s+([^;]*;)", text))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="deepseek-v3", choices=sorted(PRESETS))
    ap.add_argument("--manifest", default=None, help="a warmup manifest (JSON/YAML) instead of the preset")
    ap.add_argument("--family", default=None, help="only kernels of this family (gemm, mla, spec, ...)")
    ap.add_argument("--arch", default="sm_90a")
    args = ap.parse_args()
    tool = nvdisasm()
    if tool is None:
        raise SystemExit("nvdisasm not found: pip install nvidia-cuda-nvdisasm")
    manifest = load_manifest(args.manifest) if args.manifest else PRESETS[args.preset]
    for spec in specs_for_manifest(manifest, target_for_arch(args.arch)):
        if args.family and spec.family != args.family:
            continue
        entry, _ = compile_spec(spec, args.arch)
        print(digest(entry.cubin, tool), spec.name + "".join(f" -D{k}={v}" for k, v in spec.defines), flush=True)


if __name__ == "__main__":
    main()
