"""Input validation shared by every op. Each failure is a ValueError naming the argument and
what was expected, raised before any launch."""
from __future__ import annotations

import torch


def _dtype_names(dtype):
    ds = dtype if isinstance(dtype, (tuple, list)) else (dtype,)
    return " or ".join(str(d).replace("torch.", "") for d in ds)


def check_tensor(name: str, t, *, dtype=None, ndim=None, shape=None, cuda=True, device=None,
                 contiguous=False, inner_contiguous=False, align_bytes=None):
    """Validate tensor argument ``name``.

    dtype: a dtype or tuple of allowed dtypes. shape: tuple with ``None`` for free dims.
    cuda: must live on a CUDA device; device: must be on this device. contiguous: fully
    contiguous; inner_contiguous: last dim has stride 1. align_bytes: data pointer alignment.
    """
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if dtype is not None:
        ok = t.dtype in dtype if isinstance(dtype, (tuple, list)) else t.dtype == dtype
        if not ok:
            raise ValueError(f"{name}: expected dtype {_dtype_names(dtype)}, got {str(t.dtype).replace('torch.', '')}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name}: expected {ndim} dims, got shape {tuple(t.shape)}")
    if shape is not None:
        if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
            want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
            raise ValueError(f"{name}: expected shape {want}, got {list(t.shape)}")
    if cuda and not t.is_cuda:
        raise ValueError(f"{name}: expected a CUDA tensor, got device {t.device}")
    if device is not None and t.device != torch.device(device):
        raise ValueError(f"{name}: expected device {device}, got {t.device}")
    if contiguous and not t.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor, got strides {t.stride()} for shape {tuple(t.shape)}")
    if inner_contiguous and t.dim() and t.stride(-1) != 1 and t.shape[-1] > 1:
        raise ValueError(f"{name}: expected stride 1 in the last dim, got strides {t.stride()}")
    if align_bytes and t.numel() and t.data_ptr() % align_bytes:
        raise ValueError(f"{name}: data pointer must be {align_bytes}-byte aligned (got offset "
                         f"{t.data_ptr() % align_bytes}); pass a fresh or suitably sliced tensor")
    return t


def check_same_device(**tensors):
    devs = {n: t.device for n, t in tensors.items() if isinstance(t, torch.Tensor)}
    first = next(iter(devs.items()), None)
    for n, d in devs.items():
        if d != first[1]:
            raise ValueError(f"{n}: expected device {first[1]} (same as {first[0]}), got {d}")


def check_multiple(name: str, value: int, multiple: int, what: str = ""):
    if value % multiple:
        raise ValueError(f"{name}: expected a multiple of {multiple}{' (' + what + ')' if what else ''}, got {value}")
