"""End to end MoE layer on the GPU: route -> permute -> grouped GEMM (contiguous) -> unpermute,
against float64 math per token. bf16 and fp8 operands."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from jitkern.reference.gemm import rel_err


@pytest.mark.gpu
@settings(max_examples=8)
@given(t=st.integers(1, 96), k=st.sampled_from([1, 2, 8]), g=st.integers(1, 12),
       kind=st.sampled_from(["bf16", "fp8"]), seed=st.integers(0, 2**31))
def test_moe_layer_matches_reference(t, k, g, kind, seed):
    from jitkern.ops import gemm, moe
    from jitkern.ops.quant import per_block_quant_fp8, per_token_group_quant_fp8
    from jitkern.reference.quant import dequant_block, dequant_token_group
    h, n = 512, 256
    gen = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(t, h, device="cuda", generator=gen).bfloat16()
    w = (torch.randn(g, n, h, device="cuda", generator=gen) * 0.05).bfloat16()
    ids = torch.randint(0, g, (t, k), device="cuda", generator=gen, dtype=torch.int32)
    weights = torch.rand(t, k, device="cuda", generator=gen)
    lay = moe.moe_align(ids, g)
    xp = moe.moe_permute(x, lay)
    y = torch.full((lay.m_cap, n), float("nan"), device="cuda", dtype=torch.bfloat16)
    if kind == "bf16":
        gemm.grouped_gemm_bf16_contiguous(xp, w, lay.group_index, out=y)
        xd, wd = x.double(), w.double()
    else:
        qx, sx = per_token_group_quant_fp8(xp)
        qw = [per_block_quant_fp8(w[e]) for e in range(g)]
        gemm.grouped_gemm_fp8_contiguous((qx, sx), (torch.stack([q for q, _ in qw]), torch.stack([s for _, s in qw])),
                                         lay.group_index, out=y)
        # each token's rows hold the same quantised values whichever expert they went to
        xd = dequant_token_group(*per_token_group_quant_fp8(x), torch.float64)
        wd = torch.stack([dequant_block(q, s, torch.float64) for q, s in qw])
    out = moe.moe_unpermute(y, lay, weights)
    per_expert = torch.einsum("th,enh->ten", xd, wd)  # [t, g, n]
    picked = per_expert.gather(1, ids.long()[..., None].expand(t, k, n))  # [t, k, n]
    ref = torch.einsum("tj,tjn->tn", weights.double(), picked)
    # two bf16 roundings (expert output, combined output), each <= 2^-9 relative
    assert rel_err(out, ref) <= 5e-3
