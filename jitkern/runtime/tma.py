"""TMA tensor maps (``CUtensorMap``) for ``const __grid_constant__ TmaDescriptor`` kernel
parameters (see ``templates/common/hopper.cuh``), built with ``cuTensorMapEncodeTiled``.

Dimension order is the driver's: innermost (contiguous) dimension first. For a row-major
``[rows, cols]`` tensor: ``dims=(cols, rows)``, ``strides_bytes=(row_stride_bytes,)``,
``box=(box_cols, box_rows)``. Encoding needs no GPU context, only a loaded driver.
"""
from __future__ import annotations

_DTYPES = None


def _dtype_enum(dtype):
    global _DTYPES
    from cuda.bindings import driver
    T = driver.CUtensorMapDataType
    if _DTYPES is None:
        import torch
        _DTYPES = {
            torch.uint8: (T.CU_TENSOR_MAP_DATA_TYPE_UINT8, 1),
            torch.int8: (T.CU_TENSOR_MAP_DATA_TYPE_UINT8, 1),
            torch.float8_e4m3fn: (T.CU_TENSOR_MAP_DATA_TYPE_UINT8, 1),
            torch.float8_e5m2: (T.CU_TENSOR_MAP_DATA_TYPE_UINT8, 1),
            torch.bfloat16: (T.CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2),
            torch.float16: (T.CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2),
            torch.float32: (T.CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4),
            torch.int32: (T.CU_TENSOR_MAP_DATA_TYPE_INT32, 4),
            torch.int64: (T.CU_TENSOR_MAP_DATA_TYPE_INT64, 8),
        }
    if dtype not in _DTYPES:
        raise ValueError(f"dtype: no TMA data type for {dtype}")
    return _DTYPES[dtype]


def _swizzle_enum(swizzle):
    from cuda.bindings import driver
    S = driver.CUtensorMapSwizzle
    table = {0: S.CU_TENSOR_MAP_SWIZZLE_NONE, 32: S.CU_TENSOR_MAP_SWIZZLE_32B,
             64: S.CU_TENSOR_MAP_SWIZZLE_64B, 128: S.CU_TENSOR_MAP_SWIZZLE_128B}
    if isinstance(swizzle, S):
        return swizzle, {v: k for k, v in table.items()}[swizzle]
    if swizzle not in table:
        raise ValueError(f"swizzle: expected 0, 32, 64 or 128 (bytes), got {swizzle!r}")
    return table[swizzle], swizzle


def make_tma_desc(tensor_or_ptr, dtype, dims, strides_bytes, box, swizzle=0, *, elem_strides=None,
                  l2_promotion=256, oob_fill_nan=False):
    """Encode a tiled TMA descriptor.

    tensor_or_ptr: a CUDA ``torch.Tensor`` (its data pointer is the global base) or an int
        address. Base must be 16-byte aligned.
    dtype: torch dtype of the elements (fp8 types are encoded as UINT8).
    dims: global extents, innermost first (``rank`` entries, 1..5).
    strides_bytes: byte strides of dims 1..rank-1 (``rank - 1`` entries, multiples of 16); a
        ``rank``-long sequence whose first entry is the element size is accepted too.
    box: tile extents, innermost first; ``box[0] * elem_size`` must be a multiple of 16 bytes
        and at most the swizzle span when swizzled; every entry <= 256.
    swizzle: 0, 32, 64 or 128 (bytes) or a ``CUtensorMapSwizzle``.
    Out-of-bounds elements read as zero (NaN with ``oob_fill_nan``); stores skip them.
    Returns the ``CUtensorMap`` (pass it straight to ``Kernel.launch``).
    """
    from cuda.bindings import driver
    import torch
    dt, esize = _dtype_enum(dtype)
    ptr = tensor_or_ptr.data_ptr() if isinstance(tensor_or_ptr, torch.Tensor) else int(tensor_or_ptr)
    rank = len(dims)
    if not 1 <= rank <= 5:
        raise ValueError(f"dims: expected 1 to 5 dimensions, got {len(dims)}")
    strides = list(strides_bytes)
    if len(strides) == rank and rank > 1 and strides[0] == esize:
        strides = strides[1:]
    if len(strides) != rank - 1:
        raise ValueError(f"strides_bytes: expected {rank - 1} entries for {rank} dims, got {list(strides_bytes)}")
    if len(box) != rank:
        raise ValueError(f"box: expected {rank} entries, got {list(box)}")
    if ptr % 16:
        raise ValueError(f"tensor_or_ptr: base address must be 16-byte aligned (offset {ptr % 16})")
    for i, s in enumerate(strides):
        if s % 16 or s <= 0:
            raise ValueError(f"strides_bytes[{i}]: expected a positive multiple of 16, got {s}")
    for i, b in enumerate(box):
        if not 1 <= b <= 256:
            raise ValueError(f"box[{i}]: expected 1..256, got {b}")
    if (box[0] * esize) % 16:
        raise ValueError(f"box[0]: {box[0]} elements x {esize} bytes is not a multiple of 16 bytes")
    sw, sw_bytes = _swizzle_enum(swizzle)
    if sw_bytes and box[0] * esize > sw_bytes:
        raise ValueError(f"box[0]: {box[0] * esize} bytes exceeds the {sw_bytes}-byte swizzle span")
    for i, d in enumerate(dims):
        if d <= 0 or d >= 1 << 32:
            raise ValueError(f"dims[{i}]: expected 1..2^32-1, got {d}")
    es = list(elem_strides) if elem_strides is not None else [1] * rank
    promo = {0: driver.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_NONE,
             64: driver.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_64B,
             128: driver.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
             256: driver.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_256B}[l2_promotion]
    fill = (driver.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA if oob_fill_nan
            else driver.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE)
    err, tmap = driver.cuTensorMapEncodeTiled(
        dt, rank, ptr, [driver.cuuint64_t(int(d)) for d in dims], [driver.cuuint64_t(int(s)) for s in strides],
        [driver.cuuint32_t(int(b)) for b in box], [driver.cuuint32_t(int(e)) for e in es], driver.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_NONE, sw, promo, fill)
    if err != driver.CUresult.CUDA_SUCCESS:
        _, msg = driver.cuGetErrorString(err)
        raise ValueError(f"cuTensorMapEncodeTiled rejected dims={list(dims)} strides={strides} box={list(box)} "
                         f"swizzle={sw_bytes} dtype={dtype}: {err.name} ({msg})")
    return tmap


def make_tma_2d(t, box_rows: int, box_cols: int, swizzle: int = 0, rows: int | None = None):
    """Descriptor of a 2D tensor ``t`` [rows, cols] with stride 1 along cols: boxes of
    ``box_rows x box_cols`` elements. ``rows`` overrides the row extent (e.g. a padded view)."""
    r = t.shape[0] if rows is None else rows
    return make_tma_desc(t, t.dtype, (t.shape[1], r), (t.stride(0) * t.element_size(),), (box_cols, box_rows), swizzle)
