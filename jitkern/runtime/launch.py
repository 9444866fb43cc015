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
_launch_raw = None  # cuLaunchKernel without argtypes: the caller passes ready ctypes objects


def _libcuda():
    global _driver, _launch_raw
    if _driver is None:
        lib = cudadrv.lib()
        u = ctypes.c_uint
        lib.cuLaunchKernel.argtypes = [ctypes.c_void_p, u, u, u, u, u, u, u, ctypes.c_void_p,
                                       ctypes.c_void_p, ctypes.c_void_p]
        lib.cuLaunchKernel.restype = ctypes.c_int
        lib.cuLaunchKernelEx.argtypes = [ctypes.POINTER(_LaunchConfig), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        lib.cuLaunchKernelEx.restype = ctypes.c_int
        # A second handle on cuLaunchKernel with no argtypes: per-argument from_param conversion
        # of 11 arguments costs about as much as the driver call; the hot path passes the
        # handle, stream and parameter array as cached c_void_p and the dims as small ints
        # (C int, read as unsigned by the driver).
        raw = type(lib.cuLaunchKernel)(("cuLaunchKernel", lib))
        raw.restype = ctypes.c_int
        _launch_raw = raw
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


def _stream_fn():
    """torch's C accessor of the current raw ``cudaStream_t`` per device, resolved once
    (``torch.cuda.current_stream()`` builds a Python Stream object per call)."""
    global _raw_stream_fn
    if _raw_stream_fn is None:
        import torch
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
        _raw_stream_fn = raw if raw is not None else (lambda i: torch.cuda.current_stream(i).cuda_stream)
    return _raw_stream_fn


def _current_stream(index: int) -> int:
    """torch's current raw ``cudaStream_t`` on device ``index``."""
    return (_raw_stream_fn or _stream_fn())(index)


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
        self._fptr_arg = ctypes.c_void_p(function)
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

    def _allow_smem(self, smem: int):
        # Static plus dynamic shared memory above 48 KiB needs the opt-in attribute (a kernel with
        # 6 KiB of static arrays fails to launch with 48 KiB dynamic without it).
        static = self.attribute(cudadrv.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
        if smem + static > 49152:
            self._ensure_smem(smem)
        else:
            self._smem_limit_set = smem

    def launch(self, grid, block, args, smem: int = 0, cluster=None, stream=None):
        """Launch on ``stream`` (a raw ``cudaStream_t`` int; default torch's current stream of this
        kernel's device). ``grid``/``block``/``cluster`` are tuples of up to 3 ints."""
        # Host-latency-critical (every op's launch): locals, no helper calls where avoidable.
        if smem > self._smem_limit_set:
            self._allow_smem(smem)
        if stream is None:
            stream = (_raw_stream_fn or _stream_fn())(self.device_index)
        params, _keep = pack_args(args)
        if _launch_raw is None:
            _libcuda()
        if cluster is None or all(c == 1 for c in cluster):
            n = len(grid)
            gx, gy, gz = (grid[0], grid[1], grid[2]) if n == 3 else (grid[0], grid[1] if n > 1 else 1, 1)
            n = len(block)
            bx, by, bz = (block[0], block[1], block[2]) if n == 3 else (block[0], block[1] if n > 1 else 1, 1)
            sa = _stream_args.get(stream) or _stream_arg(stream)
            try:
                err = _launch_raw(self._fptr_arg, gx, gy, gz, bx, by, bz, smem, sa,
                                  _params.ptrs_arg if _keep is None else ctypes.c_void_p(params), None)
            except ctypes.ArgumentError:  # dims that are not plain ints (numpy, torch): convert
                err = _driver.cuLaunchKernel(self._fptr, *map(int, (gx, gy, gz, bx, by, bz, smem)), stream, params, None)
        else:
            cfg = self._cluster_config(_dim3(grid), _dim3(block), smem, _dim3(cluster))
            cfg[0].hStream = stream
            err = _driver.cuLaunchKernelEx(cfg[0], self._fptr, params, None)
        if err:
            cudadrv.check(err, f"launching {self.name} grid={tuple(grid)} block={tuple(block)} "
                               f"smem={smem} cluster={cluster}")

    def prepare(self, grid, block, args, smem: int = 0) -> "PreparedLaunch":
        """A :class:`PreparedLaunch` of this kernel: grid, block, smem and every non-tensor
        argument fixed now; only tensor pointers are given per call. For ops that memoise one per
        input shape (see ``PreparedLaunch``)."""
        return PreparedLaunch(self, grid, block, args, smem)

    def max_active_clusters(self, block, smem: int, cluster) -> int:
        """How many clusters of ``cluster`` CTAs (``block`` threads, ``smem`` bytes of dynamic shared
        memory each) the device holds at once (``cuOccupancyMaxActiveClusters``): a persistent grid
        must stay within it, since GPCs whose free SMs do not pair up host fewer than SMs / size."""
        if smem > 48 * 1024 and smem > self._smem_limit_set:
            self._ensure_smem(smem)
        cl = tuple((tuple(cluster) + (1, 1))[:3])
        size = cl[0] * cl[1] * cl[2]
        cfg = self._cluster_config((size, 1, 1), tuple((tuple(block) + (1, 1))[:3]), smem, cl)
        fn = cudadrv.lib().cuOccupancyMaxActiveClusters
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


class PreparedLaunch:
    """One kernel launch with everything but the tensor pointers fixed: grid, block, dynamic
    shared memory and the scalar/struct arguments are packed once into a private parameter
    buffer; a call writes the tensors' pointers into their slots and launches on torch's current
    stream. Host cost is about the driver call alone (no per-call packing or ctypes objects).

    ``args`` as for :meth:`Kernel.launch`; the tensors in it only mark their positions (their
    pointers are not kept). A call passes the pointers (ints), in the order the tensors appear.
    Not safe to share between threads (the buffer is rewritten per call): keep one per thread.
    """

    def __init__(self, kernel: Kernel, grid, block, args, smem: int = 0):
        import torch
        n = len(args)
        if n > _MAX_ARGS:
            raise ValueError(f"args: at most {_MAX_ARGS} kernel arguments, got {n}")
        if smem > 48 * 1024 and smem > kernel._smem_limit_set:
            kernel._ensure_smem(smem)
        self.kernel, self.smem = kernel, smem
        self.dims = _dim3(grid) + _dim3(block)
        self._slots = (ctypes.c_uint64 * max(n, 1))()
        base = ctypes.addressof(self._slots)
        ptrs = [base + _SLOT * i for i in range(n)]
        self._tensor_slots = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        # pack the fixed arguments once, through the shared packer, then copy them over
        pack_args([ctypes.c_uint64(0) if isinstance(a, torch.Tensor) else a for a in args])
        ctypes.memmove(base, _params.slots, _SLOT * n)
        self._keep = []
        for i, a in enumerate(args):  # by-value structs/tensor maps are read from their own storage
            k = _KIND.get(type(a))
            if k == _BYVAL:
                ptrs[i] = ctypes.addressof(a)
                self._keep.append(a)
            elif k == _TMAP:
                ptrs[i] = a.getPtr()
                self._keep.append(a)
        self._ptrs = (ctypes.c_void_p * max(n, 1))(*ptrs)
        ts = self._tensor_slots
        consecutive = bool(ts) and ts == list(range(ts[0], ts[0] + len(ts)))
        self._run = struct.Struct(f"<{len(ts)}Q") if consecutive else None
        self._run_offset = _SLOT * ts[0] if consecutive else 0
        self._fptr_arg, self._device = kernel._fptr_arg, kernel.device_index
        self._ptrs_arg = ctypes.c_void_p(ctypes.addressof(self._ptrs))

    def __call__(self, *ptrs, stream=None):
        """Launch with the tensors' data pointers ``ptrs`` (ints) on ``stream`` (default torch's
        current stream of the kernel's device)."""
        if self._run is not None:  # tensors in consecutive slots: one pack_into
            self._run.pack_into(self._slots, self._run_offset, *ptrs)
        else:
            slots = self._slots
            for i, p in zip(self._tensor_slots, ptrs):
                slots[i] = p
        if stream is None:
            stream = (_raw_stream_fn or _stream_fn())(self._device)
        if _launch_raw is None:
            _libcuda()
        err = _launch_raw(self._fptr_arg, *self.dims, self.smem, _stream_args.get(stream) or _stream_arg(stream),
                          self._ptrs_arg, None)
        if err:
            k = self.kernel
            cudadrv.check(err, f"launching {k.name} dims={self.dims} smem={self.smem}")
