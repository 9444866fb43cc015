"""cubin -> per-device function handles, through the driver (ctypes, :mod:`.cudadrv`).

``cuLibraryLoadData`` makes a context-independent library once per process; each device gets its
``CUfunction`` through ``cuKernelGetFunction`` in torch's primary context of that device.
"""
from __future__ import annotations

import ctypes
import threading

from .cudadrv import lib, out_call

_ctx_lock = threading.Lock()
_ready_devices: set = set()


def ensure_context(index: int):
    """Make torch's primary context of device ``index`` current on this thread."""
    if index not in _ready_devices:
        import torch
        with _ctx_lock:
            torch.cuda.init()
            with torch.cuda.device(index):
                torch.empty(1, device=f"cuda:{index}")  # forces the primary context into being
            _ready_devices.add(index)
    ctx = out_call("cuCtxGetCurrent", ctypes.c_void_p)
    if ctx and out_call("cuCtxGetDevice", ctypes.c_int) == index:
        return
    dev = out_call("cuDeviceGet", ctypes.c_int, index)
    primary = out_call("cuDevicePrimaryCtxRetain", ctypes.c_void_p, dev)
    from .cudadrv import check
    check(lib().cuCtxSetCurrent(primary), "cuCtxSetCurrent")


def load_library(cubin: bytes) -> int:
    return out_call("cuLibraryLoadData", ctypes.c_void_p, cubin, None, None, 0, None, None, 0)


def get_function(library: int, lowered_name: str, index: int) -> int:
    """CUfunction handle (an int) of ``lowered_name`` for device ``index``."""
    ensure_context(index)
    kernel = out_call("cuLibraryGetKernel", ctypes.c_void_p, library, lowered_name.encode())
    return out_call("cuKernelGetFunction", ctypes.c_void_p, kernel)
