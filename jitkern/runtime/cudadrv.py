"""The few CUDA driver calls jitkern's hot paths need, through ctypes on ``libcuda.so.1``.

Importing ``cuda.bindings.driver`` costs ~25 ms and its generic argument conversion several
microseconds per call; loading a cached kernel and launching it need neither.
"""
from __future__ import annotations

import ctypes

_lib = None
c_void_p, c_int, c_uint, c_char_p = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint, ctypes.c_char_p

CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES = 1
CU_FUNC_ATTRIBUTE_NUM_REGS = 4
CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8

_SIGNATURES = {
    "cuGetErrorName": [c_int, ctypes.POINTER(c_char_p)],
    "cuGetErrorString": [c_int, ctypes.POINTER(c_char_p)],
    "cuCtxGetCurrent": [ctypes.POINTER(c_void_p)],
    "cuCtxGetDevice": [ctypes.POINTER(c_int)],
    "cuCtxSetCurrent": [c_void_p],
    "cuDeviceGet": [ctypes.POINTER(c_int), c_int],
    "cuDevicePrimaryCtxRetain": [ctypes.POINTER(c_void_p), c_int],
    "cuLibraryLoadData": [ctypes.POINTER(c_void_p), c_char_p, c_void_p, c_void_p, c_uint, c_void_p, c_void_p, c_uint],
    "cuLibraryGetKernel": [ctypes.POINTER(c_void_p), c_void_p, c_char_p],
    "cuKernelGetFunction": [ctypes.POINTER(c_void_p), c_void_p],
    "cuFuncSetAttribute": [c_void_p, c_int, c_int],
    "cuFuncGetAttribute": [ctypes.POINTER(c_int), c_int, c_void_p],
}


def lib():
    """``libcuda.so.1`` with argument types set for the calls above (and the launch calls,
    which :mod:`jitkern.runtime.launch` declares)."""
    global _lib
    if _lib is None:
        try:
            l = ctypes.CDLL("libcuda.so.1")
        except OSError as e:
            raise RuntimeError("the NVIDIA driver (libcuda.so.1) is not available: launching kernels "
                               "needs a GPU; compile-only work (arch='sm_90a') does not") from e
        for name, argtypes in _SIGNATURES.items():
            fn = getattr(l, name)
            fn.argtypes, fn.restype = argtypes, c_int
        _lib = l
    return _lib


def error_text(code: int) -> str:
    name, msg = c_char_p(), c_char_p()
    lib().cuGetErrorName(code, ctypes.byref(name))
    lib().cuGetErrorString(code, ctypes.byref(msg))
    return f"{(name.value or b'CUDA_ERROR_' + str(code).encode()).decode()} ({(msg.value or b'').decode()})"


def check(code: int, what: str):
    if code:
        raise RuntimeError(f"{what} failed: {error_text(code)}")


def out_call(fn_name: str, ctype, *args, what: str = ""):
    """Call a driver function whose first parameter is an output pointer; return the value."""
    v = ctype()
    check(getattr(lib(), fn_name)(ctypes.byref(v), *args), what or fn_name)
    return v.value
