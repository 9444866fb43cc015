"""cubin -> per-device function handles (cuda.bindings.driver).

``cuLibraryLoadData`` makes a context-independent library once per process; each device gets its
``CUfunction`` through ``cuKernelGetFunction`` in torch's primary context of that device.
"""
from __future__ import annotations

import threading


def check(result, what: str):
    """Unwrap a cuda.bindings return tuple, raising on an error code."""
    from cuda.bindings import driver
    err = result[0] if isinstance(result, tuple) else result
    if err != driver.CUresult.CUDA_SUCCESS:
        _, msg = driver.cuGetErrorString(err)
        msg = msg.decode() if isinstance(msg, bytes) else msg
        raise RuntimeError(f"{what} failed: {err.name} ({msg})")
    if isinstance(result, tuple):
        return result[1] if len(result) == 2 else result[1:]
    return None


_ctx_lock = threading.Lock()
_ready_devices: set = set()


def ensure_context(index: int):
    """Make torch's primary context of device ``index`` current on this thread."""
    import torch
    from cuda.bindings import driver
    if index not in _ready_devices:
        with _ctx_lock:
            torch.cuda.init()
            with torch.cuda.device(index):
                torch.empty(1, device=f"cuda:{index}")  # forces the primary context into being
            _ready_devices.add(index)
    ctx = check(driver.cuCtxGetCurrent(), "cuCtxGetCurrent")
    dev_ctx = None
    if ctx is not None and int(ctx) != 0:
        dev = check(driver.cuCtxGetDevice(), "cuCtxGetDevice")
        if int(dev) == index:
            return
    dev = check(driver.cuDeviceGet(index), "cuDeviceGet")
    dev_ctx = check(driver.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
    check(driver.cuCtxSetCurrent(dev_ctx), "cuCtxSetCurrent")


def load_library(cubin: bytes):
    from cuda.bindings import driver
    return check(driver.cuLibraryLoadData(cubin, None, None, 0, None, None, 0), "cuLibraryLoadData")


def get_function(library, lowered_name: str, index: int):
    """CUfunction of ``lowered_name`` for device ``index`` (its primary context made current)."""
    from cuda.bindings import driver
    ensure_context(index)
    kernel = check(driver.cuLibraryGetKernel(library, lowered_name.encode()), "cuLibraryGetKernel")
    return check(driver.cuKernelGetFunction(kernel), "cuKernelGetFunction")
