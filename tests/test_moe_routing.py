"""MoE routing: moe_align (torch ops, checked on CPU too) and the permute/unpermute kernels (GPU)."""
import pytest
import torch
from hypothesis import given, strategies as st

from jitkern.ops import moe
from jitkern.reference import moe as ref


@st.composite
def routings(draw):
    t = draw(st.integers(0, 40))
    k = draw(st.sampled_from([1, 2, 4, 6, 8]))
    g = draw(st.integers(1, 20))
    seed = draw(st.integers(0, 2**31))
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(-1, g + 2, (t, k), generator=gen, dtype=torch.int32)  # includes dropped ids
    return ids, g, draw(st.sampled_from([1, 4, 128]))


@given(routings())
def test_align_matches_reference_on_cpu(r):
    ids, g, a = r
    lay = moe.moe_align(ids, g, a)
    gi, row_of, tok, used, m_cap = ref.moe_align(ids, g, a)
    assert lay.m_cap == m_cap
    assert torch.equal(lay.group_index, gi) and torch.equal(lay.row_of, row_of)
    assert torch.equal(lay.token_of_row, tok) and int(lay.num_rows) == used
    assert used % a == 0 and used <= m_cap


def test_align_rejects_bad_args():
    with pytest.raises(ValueError, match="topk_ids: expected dtype"):
        moe.moe_align(torch.zeros(4, 2), 8)
    with pytest.raises(ValueError, match="num_experts"):
        moe.moe_align(torch.zeros(4, 2, dtype=torch.int32), 0)


def _within_combine_rounding(out, expect, magnitude):
    """One bf16 rounding of the result (<= 2^-9 relative, 2^-8 allowed) plus fp32 accumulation of
    at most 9 terms (<= 9 * 2^-24 of the terms' magnitude sum, 2^-20 allowed): cancellation can
    make the second dominate for results near zero."""
    return (out.float() - expect).abs() <= expect.abs() * 2.0 ** -8 + magnitude * 2.0 ** -20


@pytest.mark.gpu
@given(r=routings(), h=st.sampled_from([8, 64, 7168]), n=st.sampled_from([8, 256, 2048]),
       seed=st.integers(0, 2**31))
def test_permute_unpermute_match_reference(r, h, n, seed):
    ids, g, a = r
    t, k = ids.shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(t, h, generator=gen).to(torch.bfloat16)
    lay = moe.moe_align(ids.cuda(), g, a)
    xp = moe.moe_permute(x.cuda(), lay)
    assert torch.equal(xp.cpu(), ref.moe_permute(x, lay.token_of_row.cpu()))
    y = torch.randn(lay.m_cap, n, generator=gen).to(torch.bfloat16)
    w = torch.rand(t, k, generator=gen)
    out = torch.full((t, n), float("nan"), dtype=torch.bfloat16, device="cuda")
    moe.moe_unpermute(y.cuda(), lay, w.cuda(), out=out)
    expect = ref.moe_unpermute(y, lay.row_of.cpu(), w)
    assert torch.all(_within_combine_rounding(out.cpu(), expect, ref.moe_unpermute(y.abs(), lay.row_of.cpu(), w)))


@pytest.mark.gpu
def test_routing_is_graph_capturable():
    ids = torch.randint(0, 16, (64, 8), device="cuda", dtype=torch.int32)
    x = torch.randn(64, 512, device="cuda", dtype=torch.bfloat16)
    w = torch.rand(64, 8, device="cuda")
    lay = moe.moe_align(ids, 16)
    moe.moe_unpermute(moe.moe_permute(x, lay)[:, :256].contiguous(), lay, w)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        lay = moe.moe_align(ids, 16)
        xp = moe.moe_permute(x, lay)
        out = moe.moe_unpermute(xp, lay, w)
    ids.copy_(torch.randint(0, 16, (64, 8), device="cuda", dtype=torch.int32))
    g.replay()
    torch.cuda.synchronize()
    r = ref.moe_align(ids.cpu(), 16, 128)
    assert torch.equal(lay.row_of.cpu(), r[1])
    xp = ref.moe_permute(x.cpu(), r[2])
    expect = ref.moe_unpermute(xp, r[1], w.cpu())
    assert torch.all(_within_combine_rounding(out.cpu(), expect, ref.moe_unpermute(xp.abs(), r[1], w.cpu())))


@pytest.mark.gpu
def test_unpermute_validates():
    lay = moe.moe_align(torch.zeros(4, 3, dtype=torch.int32, device="cuda"), 2)
    y = torch.randn(lay.m_cap, 64, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="top-k 3"):
        moe.moe_unpermute(y, lay, torch.rand(4, 3, device="cuda"))
    lay = moe.moe_align(torch.zeros(4, 2, dtype=torch.int32, device="cuda"), 4)  # another m_cap
    assert lay.m_cap != y.shape[0]
    with pytest.raises(ValueError, match="y_perm: expected shape"):
        moe.moe_unpermute(y, lay, torch.rand(4, 2, device="cuda"))
    with pytest.raises(ValueError, match="topk_weights: expected dtype"):
        moe.moe_unpermute(torch.randn(lay.m_cap, 64, device="cuda", dtype=torch.bfloat16), lay,
                          torch.rand(4, 2, device="cuda", dtype=torch.float64))
