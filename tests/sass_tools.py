"""Test helper: locate nvdisasm (PATH, or the nvidia-cuda-nvcc/cu13 wheel layout) to read SASS."""
import os
import shutil


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
