"""Test helper: read a cubin's SASS with nvdisasm (PATH, or the nvidia-cuda-nvdisasm / nvcc wheels'
nvidia/cu13/bin layout). `.ci/run` installs the nvidia-cuda-nvdisasm wheel when the index has it;
without a disassembler the SASS tests skip with a reason instead of passing unchecked."""
import os
import shutil
import subprocess
import tempfile

import pytest


def nvdisasm():
    p = shutil.which("nvdisasm")
    if p:
        return p
    try:
        import nvidia
        for root in nvidia.__path__:
            cand = os.path.join(root, "cu13", "bin", "nvdisasm")
            if os.path.exists(cand):
                return cand
    except ImportError:
        pass
    return None


def disassemble(cubin: bytes, tool: str) -> str:
    """SASS text of `cubin` by the nvdisasm at `tool`."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        return subprocess.run([tool, "-c", path], capture_output=True, text=True, check=True).stdout


def sass_of(cubin: bytes) -> str:
    """SASS text of `cubin`; skips the calling test when no nvdisasm is installed."""
    nd = nvdisasm()
    if nd is None:
        pytest.skip("nvdisasm not found (pip install nvidia-cuda-nvdisasm): SASS not checked")
    return disassemble(cubin, nd)
