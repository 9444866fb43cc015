"""Launching a loaded kernel on torch's current stream: argument packing, dynamic shared memory,
thread-block clusters. Works inside CUDA-graph capture.

Kernel arguments are passed as a sequence whose items are:
  * ``torch.Tensor`` -> its device pointer (``T*`` parameter),
  * a ``ctypes`` scalar (``ctypes.c_int32(M)``, ``ctypes.c_float(x)``, ``ctypes.c_uint64(p)``),
  * a ``CUtensorMap`` (from :mod:`jitkern.runtime.tma`) -> a ``const __grid_constant__ CUtensorMap``,
  * a ``ctypes.Structure`` -> a struct parameter passed by value (same field layout as the C++ struct).
Plain Python ints/floats are refused: their C type would be a guess.

The hot path calls the driver's ``cuLaunchKernel``/``cuLaunchKernelEx`` through ctypes with a
per-thread parameter buffer: cuda.bindings' generic argument conversion costs several times more
host time than the launch itself (measured: see ``jitkern bench runtime``).
"""
from __future__ import annotations

import ctypes
import struct
import threading

from . import cudadrv
from .loader import get_function, load_library

_MAX_ARGS = 64
_SLOT = 8  # every pointer/scalar parameter is copied from an 8-byte slot (little-endian low bytes)


class _ClusterDim(ctypes.Structure):
    _fields_ = [("x", ctypes.c_uint), ("y", ctypes.c_uint), ("z", ctypes.c_uint)]


class _LaunchAttrValue(ctypes.Union):
    _fields_ = [("clusterDim", _ClusterDim), ("pad", ctypes.c_char * 64)]


class _LaunchAttr(ctypes.Structure):
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", _LaunchAttrValue)]


class _LaunchConfig(ctypes.Structure):
    _fields_ = [("gridDimX", ctypes.c_uint), ("gridDimY", ctypes.c_uint), ("gridDimZ", ctypes.c_uint),
                ("blockDimX", ctypes.c_uint), ("blockDimY", ctypes.c_uint), ("blockDimZ", ctypes.c_uint),
                ("sharedMemBytes", ctypes.c_uint), ("hStream", ctypes.c_void_p),
                ("attrs", ctypes.POINTER(_LaunchAttr)), ("numAttrs", ctypes.c_uint)]


_CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION = 4
_driver = None


def _libcuda():
    global _driver
    if _driver is None:
        lib = cudadrv.lib()
        u = ctypes.c_uint
        lib.cuLaunchKernel.argtypes = [ctypes.c_void_p, u, u, u, u, u, u, u, ctypes.c_void_p,
                                       ctypes.c_void_p, ctypes.c_void_p]
        lib.cuLaunchKernel.restype = ctypes.c_int
        lib.cuLaunchKernelEx.argtypes = [ctypes.POINTER(_LaunchConfig), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        lib.cuLaunchKernelEx.restype = ctypes.c_int
        _driver = lib
    return _driver


class _ParamBuffer(threading.local):
    """This thread's kernel-parameter storage: 8-byte slots, typed views of them, and the fixed
    ``void*[]`` of slot addresses the driver reads (one ``c_void_p`` made once, not per launch)."""

    def __init__(self):
        self.slots = (ctypes.c_uint64 * _MAX_ARGS)()
        base = ctypes.addressof(self.slots)
        self.i32 = (ctypes.c_int32 * (2 * _MAX_ARGS)).from_address(base)  # low half of slot i: [2 i]
        self.f32 = (ctypes.c_float * (2 * _MAX_ARGS)).from_address(base)
        self.f64 = (ctypes.c_double * _MAX_ARGS).from_address(base)
        self.slot_addr = [base + _SLOT * i for i in range(_MAX_ARGS)]
        self.ptrs = (ctypes.c_void_p * _MAX_ARGS)(*self.slot_addr)  # slot i's address, fixed
        self.ptrs_addr = ctypes.addressof(self.ptrs)
        self.ptrs_arg = ctypes.c_void_p(self.ptrs_addr)


_params = _ParamBuffer()
_U64 = (1 << 64) - 1
# How an argument type fills its slot (the kernel reads the parameter's size in low bytes):
# tensor pointer, integer (two's complement in 64 bits), fp32, fp64, or by address (a struct /
# CUtensorMap passed by value from its own storage). Filled per type on first sight.
_TENSOR, _INT, _F32, _F64, _BYVAL, _TMAP = range(6)
_KIND = {ctypes.c_int32: _INT, ctypes.c_int64: _INT, ctypes.c_uint32: _INT, ctypes.c_uint64: _INT,
         ctypes.c_int16: _INT, ctypes.c_uint16: _INT, ctypes.c_int8: _INT, ctypes.c_uint8: _INT,
         ctypes.c_bool: _INT, ctypes.c_void_p: _INT, ctypes.c_float: _F32, ctypes.c_double: _F64}


def _kind_of(a, i: int) -> int:
    """Classify an argument type not seen before (and remember it); TypeError if unsupported."""
    import torch
    if isinstance(a, torch.Tensor):
        k = _TENSOR
    elif isinstance(a, ctypes.Structure):
        k = _BYVAL
    elif hasattr(a, "getPtr"):
        k = _TMAP
    else:
        raise TypeError(f"kernel argument {i}: expected a torch.Tensor, a ctypes scalar or a "
                        f"CUtensorMap, got {type(a).__name__} (wrap Python numbers in ctypes)")
    _KIND[type(a)] = k
    return k


def pack_args(args):
    """Fill this thread's parameter buffer from ``args``; return the ``void**`` address (and the
    objects it points into). Valid until the next call on this thread: the driver copies
    parameters at launch. Writes each slot directly (no format string, no per-call struct
    packing): this is on every launch's host path."""
    n = len(args)
    if n > _MAX_ARGS:
        raise ValueError(f"args: at most {_MAX_ARGS} kernel arguments, got {n}")
    p = _params
    slots = p.slots
    maps = None
    i = 0
    for a in args:
        k = _KIND.get(type(a))
        if k is None:
            k = _kind_of(a, i)
        if k == _TENSOR:
            slots[i] = a.data_ptr()
        elif k == _INT:
            slots[i] = (a.value or 0) & _U64
        elif k == _F32:
            p.f32[2 * i] = a.value
        elif k == _F64:
            p.f64[i] = a.value
        else:  # passed by value from the object's own storage
            maps = maps or []
            maps.append((i, ctypes.addressof(a) if k == _BYVAL else a.getPtr()))
        i += 1
    if maps is None:
        return p.ptrs_addr, None
    ptrs = (ctypes.c_void_p * n)(*p.slot_addr[:n])
    for i, addr in maps:
        ptrs[i] = addr
    return ctypes.addressof(ptrs), (ptrs, args)


_raw_stream_fn = None


def _current_stream(index: int) -> int:
    """torch's current raw ``cudaStream_t`` on device ``index`` (the C accessor, resolved once:
    ``torch.cuda.current_stream()`` builds a Python Stream object per call)."""
    global _raw_stream_fn
    if _raw_stream_fn is None:
        import torch
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
        _raw_stream_fn = raw if raw is not None else (lambda i: torch.cuda.current_stream(i).cuda_stream)
    return _raw_stream_fn(index)


_stream_args: dict = {}


def _stream_arg(stream: int):
    """A cached ``c_void_p`` for a raw stream handle (ctypes objects cost ~0.2 us each to make)."""
    a = _stream_args.get(stream)
    if a is None:
        if len(_stream_args) > 256:  # bounded: handles are few in practice
            _stream_args.clear()
        a = _stream_args[stream] = ctypes.c_void_p(stream)
    return a


def _dim3(d):
    n = len(d)
    return (d[0], d[1] if n > 1 else 1, d[2] if n > 2 else 1)


class Kernel:
    """A compiled kernel loaded on one device."""

    def __init__(self, library, function, device_index: int, name: str):
        self.library, self.function, self.device_index, self.name = library, function, device_index, name
        self._fptr = function
        self._smem_limit_set = 0
        self._configs = {}

    @classmethod
    def load(cls, cubin: bytes, lowered_name: str, device_index: int, name: str = ""):
        lib = load_library(cubin)
        return cls(lib, get_function(lib, lowered_name, device_index), device_index, name or lowered_name)

    def attribute(self, attr: int) -> int:
        """A ``CUfunction_attribute`` value, e.g. ``cudadrv.CU_FUNC_ATTRIBUTE_NUM_REGS``."""
        return cudadrv.out_call("cuFuncGetAttribute", ctypes.c_int, attr, self.function)

    def _ensure_smem(self, smem: int):
        cudadrv.check(cudadrv.lib().cuFuncSetAttribute(self.function, cudadrv.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                                       smem), f"setting {smem} bytes of dynamic shared memory for {self.name}")
        self._smem_limit_set = smem

    def launch(self, grid, block, args, smem: int = 0, cluster=None, stream=None):
        """Launch on ``stream`` (a raw ``cudaStream_t`` int; default torch's current stream of this
        kernel's device). ``grid``/``block``/``cluster`` are tuples of up to 3 ints."""
        if smem > 48 * 1024 and smem > self._smem_limit_set:
            self._ensure_smem(smem)
        if stream is None:
            stream = _current_stream(self.device_index)
        gx, gy, gz = (tuple(grid) + (1, 1))[:3]
        bx, by, bz = (tuple(block) + (1, 1))[:3]
        params, _keep = pack_args(args)
        lib = _driver or _libcuda()
        if cluster is None or all(c == 1 for c in cluster):
            err = lib.cuLaunchKernel(self._fptr, gx, gy, gz, bx, by, bz, smem, stream, params, None)
        else:
            cfg = self._cluster_config((gx, gy, gz), (bx, by, bz), smem, tuple((tuple(cluster) + (1, 1))[:3]))
            cfg[0].hStream = stream
            err = lib.cuLaunchKernelEx(cfg[0], self._fptr, params, None)
        if err:
            cudadrv.check(err, f"launching {self.name} grid={tuple(grid)} block={tuple(block)} "
                               f"smem={smem} cluster={cluster}")

    def max_active_clusters(self, block, smem: int, cluster) -> int:
        """How many clusters of ``cluster`` CTAs (``block`` threads, ``smem`` bytes of dynamic shared
        memory each) the device holds at once (``cuOccupancyMaxActiveClusters``): a persistent grid
        must stay within it, since GPCs whose free SMs do not pair up host fewer than SMs / size."""
        if smem > 48 * 1024 and smem > self._smem_limit_set:
            self._ensure_smem(smem)
        cl = tuple((tuple(cluster) + (1, 1))[:3])
        size = cl[0] * cl[1] * cl[2]
        cfg = self._cluster_config((size, 1, 1), tuple((tuple(block) + (1, 1))[:3]), smem, cl)
        lib = cudadrv.lib()
        fn = lib.cuOccupancyMaxActiveClusters
        fn.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_void_p, ctypes.POINTER(_LaunchConfig)]
        n = ctypes.c_int(0)
        cudadrv.check(fn(ctypes.byref(n), self._fptr, cfg[0]), f"cluster occupancy of {self.name}")
        return n.value

    def _cluster_config(self, grid, block, smem, cluster):
        key = (grid, block, smem, cluster)
        cfg = self._configs.get(key)
        if cfg is None:
            attr = _LaunchAttr()
            attr.id = _CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
            attr.value.clusterDim.x, attr.value.clusterDim.y, attr.value.clusterDim.z = cluster
            c = _LaunchConfig(*grid, *block, smem, None, ctypes.pointer(attr), 1)
            cfg = self._configs[key] = (c, attr)
        return cfg
