"""FP8 quantisation: reference math properties (CPU) and kernels vs reference, bit for bit (GPU)."""
import ctypes
import math
from fractions import Fraction

import numpy as np

import pytest
import torch
from hypothesis import given, settings, strategies as st

from jitkern.reference import quant as ref

E4M3_EPS = 2.0 ** -3  # e4m3 has 3 mantissa bits: relative rounding error <= 2^-4, bound with margin


def _rand(m, k, log10_range, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    mag = 10.0 ** (torch.rand(m, k, generator=g) * 2 * log10_range - log10_range)
    sign = torch.where(torch.rand(m, k, generator=g) < 0.5, -1.0, 1.0)
    return (mag * sign).to(dtype)


shapes = st.tuples(st.integers(0, 70), st.integers(1, 600))


@given(shape=shapes, rng=st.floats(0, 6), pow2=st.booleans(), seed=st.integers(0, 2**31))
def test_token_group_reference_properties(shape, rng, pow2, seed):
    m, k = shape
    x = _rand(m, k, rng, seed=seed)
    q, s = ref.quant_token_group(x, pow2)
    assert q.dtype == torch.float8_e4m3fn and q.shape == (m, k) and s.shape == (m, -(-k // 128))
    if m == 0:
        return
    groups = torch.nn.functional.pad(x, (0, s.shape[1] * 128 - k)).view(m, -1, 128)
    amax = groups.abs().amax(-1)
    expect = amax.clamp_min(1e-4) / 448
    if pow2:
        assert torch.all(torch.log2(s) == torch.round(torch.log2(s)))
        assert torch.all(s >= expect) and torch.all(s < 2 * expect)
    else:
        assert torch.equal(s, expect)
    assert q.float().abs().max() <= 448
    # dequantised values are within e4m3 rounding of x, or below the group's subnormal step
    deq = ref.dequant_token_group(q, s)
    tol = E4M3_EPS * x.abs() + s.repeat_interleave(128, 1)[:, :k] * 2.0 ** -9
    assert torch.all((deq - x).abs() <= tol)


@given(n=st.integers(1, 300), k=st.integers(1, 300), pow2=st.booleans(), seed=st.integers(0, 2**31))
def test_block_reference_properties(n, k, pow2, seed):
    x = _rand(n, k, 3, seed=seed)
    q, s = ref.quant_block(x, pow2)
    assert s.shape == (-(-n // 128), -(-k // 128))
    for bi in range(s.shape[0]):
        for bj in range(s.shape[1]):
            blk = x[bi * 128:(bi + 1) * 128, bj * 128:(bj + 1) * 128]
            e = blk.abs().max().clamp_min(1e-4) / 448
            assert (s[bi, bj] >= e and s[bi, bj] < 2 * e) if pow2 else s[bi, bj] == e
    deq = ref.dequant_block(q, s)
    assert torch.all((deq - x).abs() <= E4M3_EPS * x.abs() + s.max() * 2.0 ** -9)


def test_zero_rows_and_nonfinite_policy():
    x = torch.randn(4, 256)
    x[0] = 0
    x[1, 3] = float("nan")
    x[2, 200] = float("inf")
    x[3, 7] = -float("inf")
    q, s = ref.quant_token_group(x)
    qb = q.view(torch.uint8)
    assert torch.all(qb[0] == 0) and torch.all(s[0] == 1e-4 / 448)
    assert torch.isnan(s[1, 0]) and torch.all(qb[1, :128] == 0x7F) and torch.isfinite(s[1, 1])
    assert torch.isnan(s[2, 1]) and torch.all(qb[2, 128:] == 0x7F) and torch.all(qb[2, :128] != 0x7F)
    assert torch.isnan(s[3, 0])
    qb2, s2 = ref.quant_block(x)
    assert torch.isnan(s2).all()  # one 128x128 block holds all four rows


def test_ceil_pow2_exact():
    s = torch.tensor([1.0, 1.5, 0.75, 2.0 ** -20, 3e-7, 448.0])
    assert torch.equal(ref.ceil_pow2(s), torch.tensor([1.0, 2.0, 1.0, 2.0 ** -20, 2.0 ** -21, 512.0]))


# ------------------------------------------------------- kernel division (CPU, exact arithmetic)
def _rn32(v: Fraction) -> float:
    """Round an exact rational to the nearest fp32 (ties to even), subnormals included."""
    if v == 0:
        return 0.0
    a = abs(v)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    e = max(e, -126)  # fp32 subnormals share the exponent of the smallest normal
    ulp = Fraction(2) ** (e - 23)
    r = float(round(a / ulp) * ulp)  # round() on a Fraction ties to even; the result is fp32-exact
    return float(np.float32(r if v > 0 else -r))


def _fma32(a, b, c) -> float:
    return _rn32(Fraction(a) * Fraction(b) + Fraction(c))


def _kernel_div(x: float, s: float, pow2: bool) -> float:
    """The kernels' x / s (templates/quant/quant.cuh div_rn), op by op in exact fp32 arithmetic."""
    r = _rn32(1 / Fraction(s))
    q = _rn32(Fraction(x) * Fraction(r))
    if not pow2:
        q = _fma32(_fma32(-q, s, x), r, q)
        q = _fma32(_fma32(-q, s, x), r, q)
    return math.copysign(q, x)


_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=300)
@given(x=_f32, amax_x=_f32, near_mid=st.booleans(), pow2=st.booleans())
def test_kernel_division_is_ieee_division(x, amax_x, near_mid, pow2):
    """The kernels replace per-element IEEE division by a reciprocal and two fma corrections;
    the e4m3 bits must equal the reference's (x / scale) cast. Cases near e4m3 rounding
    midpoints (where a 1-ulp fp32 error would flip the result) are drawn on purpose."""
    amax = max(abs(amax_x), abs(x))
    s = torch.tensor([amax], dtype=torch.float32).clamp_min(1e-4) / 448
    if pow2:
        s = ref.ceil_pow2(s)
    s = float(s)
    if near_mid:  # x / s within an ulp or two of a midpoint between two e4m3 values
        m = 1.0 + (int(abs(x)) % 8 + 0.5) / 8
        x = float(np.float32(math.ldexp(m, int(abs(amax_x)) % 16 - 8) * s))
        x = float(np.array([x], np.float32).view(np.int32).__add__(int(abs(amax_x) * 7) % 5 - 2).view(np.float32)[0])
        if not math.isfinite(x) or abs(x) > amax:
            return
    want = (torch.tensor([x]) / torch.tensor([s])).to(torch.float8_e4m3fn).view(torch.uint8)
    got = torch.tensor([_kernel_div(x, s, pow2)]).to(torch.float8_e4m3fn).view(torch.uint8)
    assert torch.equal(got, want), (x, s)
    if abs(x / s) >= 2.0 ** -11:  # above e4m3's zero range the fp32 quotient itself is exact
        assert _kernel_div(x, s, pow2) == float(np.float32(x) / np.float32(s))


def test_kernel_division_signed_zero():
    assert math.copysign(1.0, _kernel_div(-0.0, 1e-3, False)) == -1.0
    assert math.copysign(1.0, _kernel_div(0.0, 1e-3, True)) == 1.0


# ------------------------------------------------------------------ compile for sm_90a (CPU)
@pytest.mark.parametrize("kind", ["token_group", "block"])
def test_kernels_compile_for_sm90a_without_spills(kind, cache_dir):
    from jitkern.ops import quant
    from jitkern.runtime import compile_spec
    variants = quant.TOKEN_GROUP_VARIANTS if kind == "token_group" else quant.BLOCK_VARIANTS
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for v in variants:
            entry, _ = compile_spec(quant._spec(kind, dtype, dtype == torch.float16, v), "sm_90a")
            ptxas = entry.meta["ptxas"]
            assert ptxas.get("spill_stores", 0) == 0 and ptxas.get("spill_loads", 0) == 0, (dtype, v, ptxas)


# ---------------------------------------------------------------------------------------- GPU
gpu_dtypes = st.sampled_from([torch.bfloat16, torch.float16, torch.float32])


def _assert_same(q, s, qr, sr):
    assert torch.equal(q.view(torch.uint8).cpu(), qr.view(torch.uint8)), "e4m3 bits differ"
    s, sr = s.cpu(), sr
    assert torch.equal(torch.isnan(s), torch.isnan(sr)), "NaN scales differ"
    assert torch.equal(s.nan_to_num(), sr.nan_to_num()), "scales differ"


@pytest.mark.gpu
@pytest.mark.parametrize("variant", [1, 2, 4, 8])
@settings(max_examples=40)
@given(m=st.integers(1, 600), kq=st.integers(1, 70), dtype=gpu_dtypes, pow2=st.booleans(),
       rng=st.floats(0, 4), seed=st.integers(0, 2**31))
def test_token_group_kernel_matches_reference(variant, m, kq, dtype, pow2, rng, seed):
    from jitkern.ops import quant
    real = quant.token_group_groups
    quant.token_group_groups = lambda m_, k_: variant  # exercise both kernel variants on any shape
    try:
        _token_group_case(m, kq, dtype, pow2, rng, seed)
    finally:
        quant.token_group_groups = real


def _token_group_case(m, kq, dtype, pow2, rng, seed):
    from jitkern.ops.quant import empty_token_group_scales, per_token_group_quant_fp8
    k = 16 * kq
    x = _rand(m, k, rng, dtype, seed)
    if seed % 5 == 0:
        x[seed % m] = 0
    if seed % 7 == 0:
        x[seed % m, seed % k] = float("nan")
    xd = x.cuda()
    q = torch.full((m, k), 0x55, dtype=torch.uint8, device="cuda").view(torch.float8_e4m3fn)
    s = empty_token_group_scales(m, k, "cuda").fill_(-7.0)
    per_token_group_quant_fp8(xd, pow2, out=(q, s))
    qr, sr = ref.quant_token_group(x, pow2)
    _assert_same(q, s, qr, sr)
    q2, s2 = per_token_group_quant_fp8(xd, pow2)
    assert s2.stride() == (1, (m + 3) // 4 * 4)
    _assert_same(q2, s2, qr, sr)


@pytest.mark.gpu
@pytest.mark.parametrize("threads", [256, 512, 1024])
@settings(max_examples=30)
@given(n=st.integers(1, 700), kq=st.integers(1, 40), dtype=gpu_dtypes, pow2=st.booleans(), seed=st.integers(0, 2**31))
def test_block_kernel_matches_reference(threads, n, kq, dtype, pow2, seed):
    from jitkern.ops import quant
    real = quant.block_threads
    quant.block_threads = lambda n_, k_, d_: threads  # every CTA size on any shape
    try:
        _block_case(n, kq, dtype, pow2, seed)
    finally:
        quant.block_threads = real


def _block_case(n, kq, dtype, pow2, seed):
    from jitkern.ops.quant import per_block_quant_fp8
    k = 16 * kq
    x = _rand(n, k, 3, dtype, seed)
    if seed % 4 == 0:
        x[seed % n, seed % k] = float("inf")
    q = torch.full((n, k), 0x55, dtype=torch.uint8, device="cuda").view(torch.float8_e4m3fn)
    s = torch.full((-(-n // 128), -(-k // 128)), -7.0, device="cuda")
    per_block_quant_fp8(x.cuda(), pow2, out=(q, s))
    qr, sr = ref.quant_block(x, pow2)
    _assert_same(q, s, qr, sr)
    _assert_same(*per_block_quant_fp8(x.cuda(), pow2), qr, sr)  # fresh outputs (memoised plan path)


@pytest.mark.gpu
def test_strided_rows_and_large_shapes():
    from jitkern.ops.quant import per_token_group_quant_fp8
    base = torch.randn(1024, 7168 + 64, dtype=torch.bfloat16, device="cuda") * 3  # large: 4-group variant
    x = base[:, :7168]  # row stride 7232 elements: 16-byte aligned, not contiguous
    q, s = per_token_group_quant_fp8(x)
    _assert_same(q, s, *ref.quant_token_group(x.cpu()))


@pytest.mark.gpu
def test_cuda_graph_capture_replays_correctly():
    from jitkern.ops.quant import per_block_quant_fp8, per_token_group_quant_fp8
    x = torch.randn(257, 1024, dtype=torch.bfloat16, device="cuda")
    w = torch.randn(384, 512, dtype=torch.bfloat16, device="cuda")
    per_token_group_quant_fp8(x)
    per_block_quant_fp8(w)  # load kernels outside capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        qa, sa = per_token_group_quant_fp8(x)
        qw, sw = per_block_quant_fp8(w)
    x.copy_(torch.randn_like(x) * 5)
    w.copy_(torch.randn_like(w) * 0.01)
    g.replay()
    torch.cuda.synchronize()
    _assert_same(qa, sa, *ref.quant_token_group(x.cpu()))
    _assert_same(qw, sw, *ref.quant_block(w.cpu()))


@pytest.mark.gpu
def test_empty_m_no_launch():
    from jitkern.ops.quant import per_token_group_quant_fp8
    q, s = per_token_group_quant_fp8(torch.empty(0, 256, dtype=torch.bfloat16, device="cuda"))
    assert q.shape == (0, 256) and s.shape == (0, 2)


@pytest.mark.gpu
@pytest.mark.parametrize("bad,match", [
    (lambda: torch.randn(4, 256, device="cuda").to(torch.int32), "x: expected dtype"),
    (lambda: torch.randn(4, 250, device="cuda"), "x: expected K"),
    (lambda: torch.randn(4, 256), "x: expected a CUDA tensor"),
    (lambda: torch.randn(256, 4, device="cuda").t(), "x: expected stride 1"),
    (lambda: torch.randn(4, 264, device="cuda", dtype=torch.bfloat16)[:, 1:257], "x: data pointer must be 16-byte aligned"),
    (lambda: torch.randn(2, 4, 256, device="cuda"), "x: expected 2 dims"),
])
def test_bad_inputs_raise(bad, match):
    from jitkern.ops.quant import per_block_quant_fp8, per_token_group_quant_fp8
    for fn in (per_token_group_quant_fp8, per_block_quant_fp8):
        with pytest.raises(ValueError, match=match):
            fn(bad())


@pytest.mark.gpu
def test_bad_out_layout_raises():
    from jitkern.ops.quant import per_token_group_quant_fp8
    x = torch.randn(6, 256, device="cuda")
    q = torch.empty(6, 256, dtype=torch.float8_e4m3fn, device="cuda")
    with pytest.raises(ValueError, match=r"out\[1\]: expected MN-major"):
        per_token_group_quant_fp8(x, out=(q, torch.empty(6, 2, device="cuda")))


@pytest.mark.gpu
def test_repeat_calls_revalidate_pointer_and_follow_inputs():
    """The memoised per-shape plan must still refuse a misaligned pointer, read the new input,
    and return fresh outputs on every call."""
    from jitkern.ops.quant import per_block_quant_fp8, per_token_group_quant_fp8
    base = torch.randn(64, 520, dtype=torch.bfloat16, device="cuda")
    good, bad = base[:, :512], base[:, 4:516]  # same shape and strides; bad starts 8 bytes in
    for fn, rfn in ((per_token_group_quant_fp8, ref.quant_token_group), (per_block_quant_fp8, ref.quant_block)):
        q1, s1 = fn(good)
        q2, s2 = fn(good * 2)
        assert q1.data_ptr() != q2.data_ptr() and s1.data_ptr() != s2.data_ptr()
        _assert_same(q1, s1, *rfn(good.cpu()))
        _assert_same(q2, s2, *rfn((good * 2).cpu()))
        with pytest.raises(ValueError, match="16-byte aligned"):
            fn(bad)
    # out=: a layout validated once is reused; another layout for the same input is checked again
    from jitkern.ops.quant import empty_token_group_scales
    q = torch.empty(64, 512, dtype=torch.float8_e4m3fn, device="cuda")
    s = empty_token_group_scales(64, 512, "cuda")
    for scale in (1.0, 3.0):
        per_token_group_quant_fp8(good * scale, out=(q, s))
        _assert_same(q, s, *ref.quant_token_group((good * scale).cpu()))
    with pytest.raises(ValueError, match=r"out\[1\]: expected MN-major"):
        per_token_group_quant_fp8(good, out=(q, torch.empty(64, 4, device="cuda")))

