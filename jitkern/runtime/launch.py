"""Launching a loaded kernel on torch's current stream: argument packing, dynamic shared memory,
thread-block clusters (``cuLaunchKernelEx``). Works inside CUDA-graph capture.

Kernel arguments are passed as a sequence whose items are:
  * ``torch.Tensor`` -> its device pointer (``T*`` parameter),
  * a ``ctypes`` scalar (``ctypes.c_int32(M)``, ``ctypes.c_float(x)``, ``ctypes.c_uint64(p)``),
  * a ``CUtensorMap`` (from :mod:`jitkern.runtime.tma`) -> a ``const __grid_constant__ CUtensorMap``.
Plain Python ints/floats are refused: their C type would be a guess.
"""
from __future__ import annotations

import ctypes

from .loader import check, get_function, load_library

_c_void_p = ctypes.c_void_p
_addressof = ctypes.addressof
_CData = ctypes._SimpleCData


def pack_args(args):
    """Return (keepalive, address of a void*[n] array) for cuLaunchKernel's kernelParams."""
    import torch
    holders = []
    addrs = []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            h = _c_void_p(a.data_ptr())
            holders.append(h)
            addrs.append(_addressof(h))
        elif isinstance(a, (_CData, ctypes.Structure)):
            holders.append(a)
            addrs.append(_addressof(a))
        elif hasattr(a, "getPtr"):
            holders.append(a)
            addrs.append(a.getPtr())
        else:
            raise TypeError(f"kernel argument {i}: expected a torch.Tensor, a ctypes scalar or a "
                            f"CUtensorMap, got {type(a).__name__} (wrap Python numbers in ctypes)")
    arr = (_c_void_p * len(addrs))(*addrs) if addrs else None
    holders.append(arr)
    return holders, (_addressof(arr) if arr is not None else 0)


class Kernel:
    """A compiled kernel loaded on one device."""

    def __init__(self, library, function, device_index: int, name: str):
        self.library, self.function, self.device_index, self.name = library, function, device_index, name
        self._smem_limit_set = 0
        self._configs = {}

    @classmethod
    def load(cls, cubin: bytes, lowered_name: str, device_index: int, name: str = ""):
        lib = load_library(cubin)
        return cls(lib, get_function(lib, lowered_name, device_index), device_index, name or lowered_name)

    def attribute(self, attr_name: str) -> int:
        """A ``CUfunction_attribute`` by name, e.g. ``"CU_FUNC_ATTRIBUTE_NUM_REGS"``."""
        from cuda.bindings import driver
        attr = getattr(driver.CUfunction_attribute, attr_name)
        return check(driver.cuFuncGetAttribute(attr, self.function), "cuFuncGetAttribute")

    def _ensure_smem(self, smem: int):
        if smem > 48 * 1024 and smem > self._smem_limit_set:
            from cuda.bindings import driver
            check(driver.cuFuncSetAttribute(
                self.function, driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem), f"setting {smem} bytes of dynamic shared memory for {self.name}")
            self._smem_limit_set = smem

    def launch(self, grid, block, args, smem: int = 0, cluster=None, stream=None):
        """Launch on ``stream`` (a raw ``cudaStream_t`` int; default torch's current stream of this
        kernel's device). ``grid``/``block``/``cluster`` are 3-tuples (shorter ones padded with 1)."""
        from cuda.bindings import driver
        if stream is None:
            import torch
            stream = torch.cuda.current_stream(self.device_index).cuda_stream
        if smem:
            self._ensure_smem(smem)
        gx, gy, gz = (tuple(grid) + (1, 1))[:3]
        bx, by, bz = (tuple(block) + (1, 1))[:3]
        keep, params = pack_args(args)
        if cluster is None or tuple(cluster) in ((1,), (1, 1), (1, 1, 1)):
            err, = driver.cuLaunchKernel(self.function, gx, gy, gz, bx, by, bz, smem, stream, params, 0)
        else:
            cfg = self._cluster_config((gx, gy, gz), (bx, by, bz), smem, tuple((tuple(cluster) + (1, 1))[:3]))
            cfg.hStream = stream
            err, = driver.cuLaunchKernelEx(cfg, self.function, params, 0)
        if err != driver.CUresult.CUDA_SUCCESS:
            check((err,), f"launching {self.name} grid={grid} block={block} smem={smem} cluster={cluster}")
        del keep

    def _cluster_config(self, grid, block, smem, cluster):
        key = (grid, block, smem, cluster)
        cfg = self._configs.get(key)
        if cfg is None:
            from cuda.bindings import driver
            attr = driver.CUlaunchAttribute()
            attr.id = driver.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
            attr.value.clusterDim.x, attr.value.clusterDim.y, attr.value.clusterDim.z = cluster
            cfg = driver.CUlaunchConfig()
            cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = grid
            cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = block
            cfg.sharedMemBytes = smem
            cfg.attrs = [attr]
            cfg.numAttrs = 1
            self._configs[key] = cfg
        return cfg
