"""Argument packing (CPU) and launching through the driver (GPU)."""
import ctypes
import struct

import pytest
import torch

from jitkern.runtime import KernelSpec
from jitkern.runtime.launch import _params, pack_args

SMOKE = KernelSpec("test/smoke.cuh", "jitkern::smoke_axpb<4>", family="test")


def test_pack_args_layout():
    x = torch.randn(4)
    pack_args([x, ctypes.c_int32(-5), ctypes.c_float(2.5), ctypes.c_int64(1 << 40), ctypes.c_uint32(7)])
    s = _params.slots
    assert s[0] == x.data_ptr()
    assert struct.unpack("<i", struct.pack("<Q", s[1])[:4])[0] == -5
    assert struct.unpack("<f", struct.pack("<Q", s[2])[:4])[0] == 2.5
    assert s[3] == 1 << 40 and s[4] == 7


def test_prepared_launch_packs_scalars_once_and_tensor_slots_per_call():
    from jitkern.runtime.launch import Kernel
    k = Kernel(None, 0x1000, 0, "fake")  # never launched here: packing only
    x, y = torch.randn(4), torch.randn(4)
    pl = k.prepare((3, 2), (128,), [x, y, ctypes.c_int32(-5), ctypes.c_float(2.5), ctypes.c_int64(1 << 40)])
    assert pl.dims == (3, 2, 1, 128, 1, 1) and pl._tensor_slots == [0, 1]
    raw = bytes(pl._slots)
    assert struct.unpack_from("<i", raw, 16)[0] == -5 and struct.unpack_from("<f", raw, 24)[0] == 2.5
    assert struct.unpack_from("<q", raw, 32)[0] == 1 << 40
    pl._run.pack_into(pl._slots, pl._run_offset, 0xABC0, 0xDEF0)  # what a call writes first
    assert pl._slots[0] == 0xABC0 and pl._slots[1] == 0xDEF0 and struct.unpack_from("<i", bytes(pl._slots), 16)[0] == -5
    assert [pl._ptrs[i] for i in range(5)] == [ctypes.addressof(pl._slots) + 8 * i for i in range(5)]
    gap = k.prepare((1,), (32,), [ctypes.c_int32(1), x, ctypes.c_int32(2), y])
    assert gap._run is None and gap._tensor_slots == [1, 3]


@pytest.mark.parametrize("bad", [3, 2.0, "x", None])
def test_pack_args_refuses_untyped(bad):
    with pytest.raises(TypeError, match="kernel argument 1"):
        pack_args([torch.empty(1), bad])


def _smoke(n=1000):
    # a = -2 keeps x * a exact, so the kernel's fused multiply-add equals torch's two steps
    x = torch.randn(n, device="cuda")
    y = torch.full_like(x, float("nan"))
    return x, y, [x, y, ctypes.c_float(-2.0), ctypes.c_float(0.25), ctypes.c_int32(n)]


@pytest.mark.gpu
def test_launch_plain_cluster_and_graph():
    from jitkern.runtime import get_kernel
    k = get_kernel(SMOKE)
    assert get_kernel(SMOKE, torch.device("cuda")) is k
    x, y, args = _smoke()
    k.launch((2,), (128,), args)
    torch.cuda.synchronize()
    assert torch.equal(y, x * -2.0 + 0.25)
    y.fill_(float("nan"))
    k.launch((2,), (128,), args, cluster=(2, 1, 1))
    torch.cuda.synchronize()
    assert torch.equal(y, x * -2.0 + 0.25)
    y.fill_(float("nan"))
    k.prepare((2,), (128,), args)(x.data_ptr(), y.data_ptr())
    torch.cuda.synchronize()
    assert torch.equal(y, x * -2.0 + 0.25)
    y.fill_(float("nan"))
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        k.launch((2,), (128,), args)
    x.copy_(torch.randn_like(x))
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(y, x * -2.0 + 0.25)


@pytest.mark.gpu
def test_launch_error_is_reported():
    from jitkern.runtime import get_kernel
    k = get_kernel(SMOKE)
    _, _, args = _smoke()
    with pytest.raises(RuntimeError, match="launching"):
        k.launch((1,), (4096,), args)  # more threads per block than the hardware allows
