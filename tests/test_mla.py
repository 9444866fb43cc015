"""MLA decode: reference math and the split-KV partition model (CPU), kernels vs the float32
reference (GPU)."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from jitkern.ops.mla import IMPLS, NARROW_ROWS_IMPLS
from jitkern.reference import mla as ref

D = 576
SPECIAL = [0, 1, 2, 7, 63, 64, 65, 127, 128, 129, 191, 192, 193]


def _naive(q, kv_cache, block_table, lens, scale, causal):
    """Row-by-row float64 loop: an independent check of the reference."""
    b, s_q, h_q, _ = q.shape
    ps = kv_cache.shape[1]
    out = torch.zeros(b, s_q, h_q, 512, dtype=torch.float64)
    lse = torch.full((b, h_q, s_q), -math.inf, dtype=torch.float64)
    for i in range(b):
        L = max(int(lens[i]), 0)
        keys = [kv_cache[int(block_table[i, j // ps]), j % ps, 0].double() for j in range(L)]
        for t in range(s_q):
            vis = L if not causal else max(L - s_q + t + 1, 0)
            if vis == 0:
                continue
            K = torch.stack(keys[:vis])
            for h in range(h_q):
                s = (K @ q[i, t, h].double()) * scale
                m = s.max()
                p = torch.exp(s - m)
                out[i, t, h] = (p @ K[:, :512]) / p.sum()
                lse[i, h, t] = m + torch.log(p.sum())
    return out, lse


def _make_inputs(lens, s_q, h_q, page_size=64, gen=None, device="cpu", extra_pages=0, shuffle=True,
                 dtype=torch.bfloat16, poison_tail=False):
    """Random q and cache; each request's pages are scattered over a shuffled page pool."""
    b = len(lens)
    need = [max(-(-max(L, 0) // page_size), 1) for L in lens]
    max_pages = max(need)
    num_pages = sum(need) + extra_pages
    perm = torch.randperm(num_pages, generator=gen) if shuffle else torch.arange(num_pages)
    bt = torch.zeros(b, max_pages, dtype=torch.int32)
    o = 0
    for i, n in enumerate(need):
        bt[i, :n] = perm[o:o + n].to(torch.int32)
        o += n
    if device == "cpu":
        kv = torch.randn(num_pages, page_size, 1, D, generator=gen).to(dtype)
    else:  # big caches: draw on the GPU (seeded from the CPU generator)
        gd = torch.Generator(device=device).manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
        kv = torch.randn(num_pages, page_size, 1, D, generator=gd, device=device).to(dtype)
    if poison_tail:  # slots past each request's end hold NaN: must never reach the output
        for i, L in enumerate(lens):
            L = max(L, 0)
            n = need[i]
            flat = torch.arange(n * page_size)
            for j in flat[L:].tolist():
                kv[int(bt[i, j // page_size]), j % page_size] = float("nan")
    q = torch.randn(b, s_q, h_q, D, generator=gen).to(dtype)
    return (q.to(device), kv, bt.to(device), torch.tensor(lens, dtype=torch.int32, device=device))


# ---------------------------------------------------------------------------------------- CPU
@settings(max_examples=15)
@given(lens=st.lists(st.sampled_from([0, 1, 2, 3, 63, 64, 65, 100]), min_size=1, max_size=3),
       s_q=st.integers(1, 4), h_q=st.sampled_from([1, 2, 3]), causal=st.booleans(), seed=st.integers(0, 2**31))
def test_reference_matches_naive_loop(lens, s_q, h_q, causal, seed):
    g = torch.Generator().manual_seed(seed)
    q, kv, bt, sl = _make_inputs(lens, s_q, h_q, gen=g, dtype=torch.float32)
    scale = 0.1 + (seed % 7) / 10
    out, lse = ref.mla_decode_ref(q, kv, bt, sl, scale, causal, dtype=torch.float64)
    out2, lse2 = _naive(q, kv, bt, sl, scale, causal)
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()
    assert torch.allclose(out, out2, atol=1e-10, rtol=1e-10)
    assert torch.equal(torch.isinf(lse), torch.isinf(lse2))
    assert torch.allclose(lse.nan_to_num(neginf=0), lse2.nan_to_num(neginf=0), atol=1e-10)


def test_reference_empty_and_short_rows_defined():
    g = torch.Generator().manual_seed(1)
    q, kv, bt, sl = _make_inputs([0, 1, 5], 3, 2, gen=g, dtype=torch.float32)
    out, lse = ref.mla_decode_ref(q, kv, bt, sl)
    assert torch.all(out[0] == 0) and torch.all(lse[0] == -math.inf)
    # L = 1 < s_q = 3: tokens 0, 1 see nothing, token 2 sees key 0
    assert torch.all(out[1, :2] == 0) and torch.all(lse[1, :, :2] == -math.inf)
    assert torch.isfinite(lse[1, :, 2]).all() and torch.isfinite(lse[2]).all()
    assert not torch.isnan(out).any()


@settings(max_examples=10)
@given(lens=st.lists(st.integers(1, 300), min_size=1, max_size=4), s_q=st.integers(1, 3),
       causal=st.booleans(), seed=st.integers(0, 2**31))
def test_plain_baseline_matches_reference(lens, s_q, causal, seed):
    g = torch.Generator().manual_seed(seed)
    q, kv, bt, sl = _make_inputs(lens, s_q, 2, gen=g, dtype=torch.float32)
    out, lse = ref.mla_decode_plain(q, kv, bt, sl, None, causal)
    out2, lse2 = ref.mla_decode_ref(q, kv, bt, sl, None, causal)
    assert torch.allclose(out, out2, atol=1e-4)
    assert torch.allclose(lse.nan_to_num(neginf=0), lse2.nan_to_num(neginf=0), atol=1e-4)


def test_reference_page_order_invariant():
    g = torch.Generator().manual_seed(3)
    lens = [130, 64, 1]
    q, kv, bt, sl = _make_inputs(lens, 2, 2, gen=g, dtype=torch.float32)
    out, lse = ref.mla_decode_ref(q, kv, bt, sl)
    perm = torch.randperm(kv.shape[0], generator=g)
    inv = torch.argsort(perm)
    out2, lse2 = ref.mla_decode_ref(q, kv[perm], inv[bt.long()].to(torch.int32), sl)
    assert torch.equal(out, out2) and torch.equal(lse, lse2)


def _check_partition(md, lens, P):
    nb = [-(-max(L, 0) // 64) for L in lens]
    g = md["part_start"]
    assert g[0] == 0 and g[-1] == sum(nb) and all(a <= b for a, b in zip(g, g[1:]))
    owner = {}
    for p in range(P):
        for t in range(g[p], g[p + 1]):
            owner[t] = p
    assert sorted(owner) == list(range(sum(nb)))  # every tile exactly once
    slots = set()
    for i, n in enumerate(nb):
        s, e = md["tile_prefix"][i], md["tile_prefix"][i + 1]
        assert e - s == n
        parts = sorted({owner[t] for t in range(s, e)})
        assert md["num_splits"][i] == len(parts)
        if parts:
            assert parts == list(range(parts[0], parts[-1] + 1)) and md["first_part"][i] == parts[0]
        if len(parts) > 1:
            for k in range(len(parts)):
                slot = md["slot_offset"][i] + k
                assert slot not in slots and 0 <= slot < md["total_slots"]
                slots.add(slot)
    assert md["total_slots"] == len(slots) <= 2 * P
    for p in range(P):  # a part's first request holds its first tile (or it is empty)
        if g[p] < g[p + 1]:
            i = md["part_begin_req"][p]
            assert md["tile_prefix"][i] <= g[p]


@given(lens=st.lists(st.one_of(st.sampled_from(SPECIAL), st.integers(0, 20000)), min_size=1, max_size=40),
       P=st.integers(1, 140))
def test_partition_model_properties(lens, P):
    _check_partition(ref.mla_metadata_ref(lens, P), lens, P)


def test_partition_balances_cost():
    lens = [4096] * 64
    md = ref.mla_metadata_ref(lens, 132)
    sizes = [b - a for a, b in zip(md["part_start"], md["part_start"][1:])]
    used = [s for s in sizes if s]
    # equal-cost cuts of width ceil(total / P): only the rounding leaves the last parts empty,
    # and a part's tile count differs from another's by the overhead of the requests it starts
    assert len(used) >= 132 - 3 and sizes[:len(used)] == used
    assert max(used) - min(used) <= 5


def test_kernels_compile_for_sm90a(cache_dir):
    from jitkern.ops import mla
    from jitkern.runtime import compile_spec
    for spec in (mla.SPEC_METADATA, mla.SPEC_DECODE, mla.SPEC_DECODE_PIPE, mla.SPEC_COMBINE_NARROW, mla.SPEC_COMBINE_WIDE,
                 mla.SPEC_DECODE_SIMT):
        entry, status = compile_spec(spec, "sm_90a")
        assert status == "compiled" and entry.cubin
        px = entry.meta["ptxas"]
        if spec is mla.SPEC_DECODE_SIMT:  # o[8][16] indexed by a rolled row loop lives in local memory
            assert px["spill_stores"] == 0
        elif spec not in (mla.SPEC_DECODE, mla.SPEC_DECODE_PIPE):
            assert px["spill_stores"] == 0 and px["stack_frame"] == 0
        else:  # the 40-register producer spills a few words; the consumer math must not
            assert px["spill_stores"] <= 64 and px["stack_frame"] <= 64


def test_decode_impls_keep_wgmma_pipelined(cache_dir):
    # ptxas serialises every wgmma of a kernel (C751x) when it sees an accumulator read inside a
    # pipeline stage or runs out of registers: silent, ~30% slower. Every tensor-core impl is checked.
    from jitkern.ops import mla
    from jitkern.runtime import compile_spec
    for name, spec in mla.DECODE_SPECS.items():
        entry, _ = compile_spec(spec, "sm_90a")
        assert entry.meta["ptxas"]["wgmma_serialized"] is False, name
    seesaw = compile_spec(mla.DECODE_SPECS["wgmma_seesaw"], "sm_90a")[0].meta["ptxas"]
    assert seesaw["spill_stores"] <= 64 and seesaw["stack_frame"] <= 64, seesaw  # the producer's few words


def test_default_num_parts_keeps_requests_whole_where_it_fills_the_wave():
    from jitkern.ops.mla import default_num_parts as parts
    assert parts(132, 1, 128) == 66 and parts(132, 2, 16) == 132  # without a batch: one wave
    assert parts(132, 1, 128, 64) == 64 and parts(132, 1, 128, 65) == 65 and parts(132, 2, 16, 128) == 128
    # one request per part would idle too many SMs, or two per part measured no better: one wave
    assert parts(132, 2, 16, 64) == 132 and parts(132, 1, 128, 100) == 66 and parts(132, 1, 128, 1) == 66
    assert parts(132, 1, 128, 128) == 66 and parts(132, 2, 128, 128) == 33


def test_default_impl_follows_the_measured_cases():
    # Which decode path each bench case takes by default (templates/mla/NOTES.md has the figures);
    # every path the rule can pick is in the warmup set.
    from jitkern.ops import mla
    assert mla.default_impl(1, 1, 128) == mla.default_impl(2, 4, 16) == mla.SMALL_BATCH_IMPL
    # the wide combine only where a request has >= 32 parts (of 132 by default)
    assert mla.default_impl(2, 1, 128) == mla.default_impl(1, 2, 128) == mla.SMALL_BATCH_IMPL
    assert mla.default_impl(2, 2, 128) == mla.default_impl(1, 1, 128, num_parts=31) == "wgmma_chunk"
    assert mla.default_impl(8, 2, 16, num_parts=256) == "wgmma_t_wc"
    assert mla.default_impl(64, 1, 128) == mla.default_impl(128, 1, 128) == "wgmma"
    assert mla.default_impl(64, 8, 64) == mla.default_impl(64, 3, 16) == "wgmma"
    # <= 32 query rows per request: the transposed tiles (the wide combine for few requests)
    assert mla.default_impl(64, 2, 16) == mla.default_impl(17, 1, 32) == mla.default_impl(128, 4, 8) == "wgmma_t"
    assert mla.default_impl(16, 2, 16) == mla.default_impl(8, 2, 16) == mla.default_impl(5, 1, 32) == "wgmma_t"
    assert mla.default_impl(1, 1, 16) == mla.default_impl(4, 1, 32) == mla.default_impl(4, 2, 16) == "wgmma_t_wc"
    assert mla.default_impl(128, 2, 128) == mla.default_impl(32, 4, 128) == "wgmma_seesaw"
    picked = {mla.default_impl(b, s, h) for b in (1, 3, 64) for s in range(1, 9) for h in (16, 32, 64, 128)}
    specs = mla.warmup_specs([], "sm_90a")
    assert all(mla.DECODE_SPECS[i] in specs for i in picked), picked
    assert mla.SPEC_COMBINE_NARROW in specs and mla.SPEC_COMBINE_WIDE in specs


def test_validation_on_cpu_tensors():
    from jitkern.ops import mla
    q = torch.zeros(1, 1, 16, D, dtype=torch.float16)
    with pytest.raises(ValueError, match="^q: expected dtype bfloat16"):
        mla.mla_decode(q, None, None, None, None)
    with pytest.raises(ValueError, match="^num_q_tokens"):
        mla.mla_metadata(torch.zeros(2, dtype=torch.int32, device="meta"), 9, 16)
    with pytest.raises(ValueError, match="^cache_seqlens: expected dtype int32"):
        mla.mla_metadata(torch.zeros(2, dtype=torch.int64), 1, 16)


# ---------------------------------------------------------------------------------------- GPU
def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def _check_against_ref(q, kv, bt, sl, out, lse, scale=None, causal=True):
    ro, rl = ref.mla_decode_ref(q, kv, bt, sl, scale, causal)
    assert not torch.isnan(out).any(), "NaN in out"
    assert not torch.isnan(lse).any(), "NaN in lse"
    err = _rel(out, ro) if ro.norm() > 0 else out.float().abs().max().item()
    assert err <= 5e-3, f"out relative error {err}"
    assert torch.equal(torch.isinf(lse), torch.isinf(rl)), "lse -inf pattern differs"
    fin = torch.isfinite(rl)
    if fin.any():
        assert (lse[fin] - rl[fin]).abs().max().item() <= 1e-3
    return err


lens_st = st.one_of(st.sampled_from(SPECIAL), st.integers(0, 16384))


@pytest.mark.gpu
@settings(max_examples=30)
@given(b=st.integers(1, 128), data=st.data(), s_q=st.integers(1, 8), h_q=st.sampled_from([16, 32, 64, 128]),
       causal=st.booleans(), seed=st.integers(0, 2**31))
def test_decode_matches_reference(b, data, s_q, h_q, causal, seed):
    from jitkern.ops import mla
    # keep one example's cache under ~1 GB: long requests only in small batches
    cap = 16384 if b <= 16 else 2048
    lens = data.draw(st.lists(st.one_of(st.sampled_from(SPECIAL), st.integers(0, cap)), min_size=b, max_size=b))
    g = torch.Generator().manual_seed(seed)
    q, kv, bt, sl = _make_inputs(lens, s_q, h_q, gen=g, device="cuda", extra_pages=seed % 3)
    scale = [None, 0.0625, 0.1][seed % 3]
    md = mla.mla_metadata(sl, s_q, h_q)
    out = torch.full((b, s_q, h_q, 512), float("nan"), dtype=torch.bfloat16, device="cuda")
    lse = torch.full((b, h_q, s_q), float("nan"), dtype=torch.float32, device="cuda")
    mla.mla_decode(q, kv, bt, sl, md, scale, causal, out=(out, lse))
    _check_against_ref(q, kv, bt, sl, out, lse, scale, causal)
    mla.mla_check_errors(md)


@pytest.mark.gpu
@settings(max_examples=40)
@given(lens=st.lists(st.one_of(st.sampled_from(SPECIAL), st.integers(0, 20000)), min_size=1, max_size=300),
       s_q=st.integers(1, 8), h_q=st.sampled_from([16, 32, 64, 128]), parts=st.one_of(st.none(), st.integers(1, 200)))
def test_metadata_matches_model(lens, s_q, h_q, parts):
    from jitkern.ops import mla
    sl = torch.tensor(lens, dtype=torch.int32, device="cuda")
    md = mla.mla_metadata(sl, s_q, h_q, num_parts=parts)
    want = ref.mla_metadata_ref(lens, md.num_parts, mla.FIXED_OVERHEAD)
    for k, v in want.items():
        got = getattr(md, k).tolist()
        assert (got[0] if k == "total_slots" else got) == v, k


@pytest.mark.gpu
def test_page_order_does_not_change_result():
    from jitkern.ops import mla
    g = torch.Generator().manual_seed(5)
    lens = [4100, 0, 1, 64, 65, 3000, 129]
    q, kv, bt, sl = _make_inputs(lens, 2, 32, gen=g, device="cuda", extra_pages=7)
    md = mla.mla_metadata(sl, 2, 32)
    out, lse = mla.mla_decode(q, kv, bt, sl, md)
    perm = torch.randperm(kv.shape[0], generator=g).cuda()
    inv = torch.argsort(perm)
    out2, lse2 = mla.mla_decode(q, kv[perm].contiguous(), inv[bt.long()].to(torch.int32), sl, md)
    assert torch.equal(out, out2) and torch.equal(lse, lse2)
    _check_against_ref(q, kv, bt, sl, out, lse)


@pytest.mark.gpu
@pytest.mark.parametrize("s_q", [1, 3])
def test_empty_requests_and_nan_tail_slots(s_q):
    from jitkern.ops import mla
    g = torch.Generator().manual_seed(7)
    lens = [0, 1, 2, 63, 64, 65, 0, 200]
    q, kv, bt, sl = _make_inputs(lens, s_q, 16, gen=g, device="cuda", poison_tail=True)
    md = mla.mla_metadata(sl, s_q, 16)
    out, lse = mla.mla_decode(q, kv, bt, sl, md)
    assert torch.all(out[0] == 0) and torch.all(lse[0] == -math.inf)
    assert torch.all(out[6] == 0) and torch.all(lse[6] == -math.inf)
    _check_against_ref(q, kv, bt, sl, out, lse)


@pytest.mark.gpu
def test_cuda_graph_replay_with_new_lengths():
    from jitkern.ops import mla
    g = torch.Generator().manual_seed(11)
    lens = [3000, 17, 640, 0]
    q, kv, bt, sl = _make_inputs([3100] * 4, 2, 64, gen=g, device="cuda")
    sl.copy_(torch.tensor(lens, dtype=torch.int32))
    md = mla.mla_metadata(sl, 2, 64)
    out, lse = mla.mla_decode(q, kv, bt, sl, md)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        mla.mla_metadata(sl, 2, 64, out=md)
        mla.mla_decode(q, kv, bt, sl, md, out=(out, lse))
    for new in ([100, 3100, 1, 64], [0, 0, 5, 2999]):
        sl.copy_(torch.tensor(new, dtype=torch.int32))
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        _check_against_ref(q, kv, bt, sl, out, lse)


@pytest.mark.gpu
def test_block_table_too_short_is_flagged():
    from jitkern.ops import mla
    g = torch.Generator().manual_seed(2)
    q, kv, bt, sl = _make_inputs([200, 64], 1, 16, gen=g, device="cuda")
    sl[1] = 300  # needs 5 pages, the table has 4 columns
    md = mla.mla_metadata(sl, 1, 16)
    out, lse = mla.mla_decode(q, kv, bt, sl, md)
    torch.cuda.synchronize()
    assert not torch.isnan(out).any()
    with pytest.raises(ValueError, match="^block_table: too short"):
        mla.mla_check_errors(md)


@pytest.mark.gpu
def test_validation_errors_name_the_argument():
    from jitkern.ops import mla
    g = torch.Generator().manual_seed(2)
    q, kv, bt, sl = _make_inputs([100, 64], 1, 16, gen=g, device="cuda")
    md = mla.mla_metadata(sl, 1, 16)
    cases = [
        ("q", dict(q=q.float())),
        ("q", dict(q=q[..., :512].contiguous())),
        # s_q = 2 so the transposed view is really non-contiguous (size-1 dims do not count)
        ("q", dict(q=torch.zeros(2, 2, 16, D, dtype=torch.bfloat16, device="cuda").transpose(1, 2))),
        ("kv_cache", dict(kv_cache=kv[:, :32].contiguous())),
        ("kv_cache", dict(kv_cache=kv.float())),
        ("block_table", dict(block_table=bt.long())),
        ("block_table", dict(block_table=bt[:1])),
        ("cache_seqlens", dict(cache_seqlens=sl.long())),
        ("metadata", dict(metadata=mla.mla_metadata(sl, 2, 16))),
        ("num_q_tokens", dict(q=torch.zeros(2, 9, 16, D, dtype=torch.bfloat16, device="cuda"))),
        ("num_heads_q", dict(q=torch.zeros(2, 1, 256, D, dtype=torch.bfloat16, device="cuda"))),
        ("softmax_scale", dict(softmax_scale=float("nan"))),
    ]
    for name, kw in cases:
        args = dict(q=q, kv_cache=kv, block_table=bt, cache_seqlens=sl, metadata=md)
        args.update(kw)
        with pytest.raises(ValueError, match=f"^{name}"):
            mla.mla_decode(**args)


@pytest.mark.gpu
@pytest.mark.parametrize("impl", [i for i in IMPLS if i not in NARROW_ROWS_IMPLS])
@pytest.mark.parametrize("lens,s_q,h_q,causal", [
    ([700, 0, 1, 64, 65, 129], 3, 16, True), ([2000, 5], 1, 128, True), ([333] * 5, 8, 16, False),
    ([4097, 64], 2, 128, True)])
def test_both_impls_match_reference(impl, lens, s_q, h_q, causal):
    from jitkern.ops import mla
    g = torch.Generator().manual_seed(len(lens) * 100 + s_q)
    q, kv, bt, sl = _make_inputs(lens, s_q, h_q, gen=g, device="cuda")
    md = mla.mla_metadata(sl, s_q, h_q, num_parts=7)
    out = torch.full((len(lens), s_q, h_q, 512), float("nan"), dtype=torch.bfloat16, device="cuda")
    lse = torch.full((len(lens), h_q, s_q), float("nan"), dtype=torch.float32, device="cuda")
    mla.mla_decode(q, kv, bt, sl, md, None, causal, out=(out, lse), impl=impl)
    _check_against_ref(q, kv, bt, sl, out, lse, None, causal)


@pytest.mark.gpu
@pytest.mark.parametrize("impl", NARROW_ROWS_IMPLS)
@pytest.mark.parametrize("lens,s_q,h_q,causal,parts", [
    ([700, 0, 1, 64, 65, 129], 2, 16, True, 7), ([2000, 5], 1, 16, True, 7), ([333] * 5, 1, 32, False, 3),
    ([4097, 64, 63], 2, 16, True, 40), ([1, 4096, 130], 1, 32, True, 132), ([517, 1025], 2, 8, True, 5)])
def test_transposed_impls_match_reference(impl, lens, s_q, h_q, causal, parts):
    # S^T / O^T tiles (query blocks of <= 32 rows): rows past h_q * s_q, empty and one-token
    # requests, page-boundary lengths, one and many KV parts per request (split + combine)
    from jitkern.ops import mla
    g = torch.Generator().manual_seed(len(lens) * 100 + s_q * 10 + h_q)
    q, kv, bt, sl = _make_inputs(lens, s_q, h_q, gen=g, device="cuda")
    md = mla.mla_metadata(sl, s_q, h_q, num_parts=parts)
    out = torch.full((len(lens), s_q, h_q, 512), float("nan"), dtype=torch.bfloat16, device="cuda")
    lse = torch.full((len(lens), h_q, s_q), float("nan"), dtype=torch.float32, device="cuda")
    mla.mla_decode(q, kv, bt, sl, md, None, causal, out=(out, lse), impl=impl)
    _check_against_ref(q, kv, bt, sl, out, lse, None, causal)
    # more rows than one transposed block holds: refused, naming the argument
    q2, kv2, bt2, sl2 = _make_inputs([64], 1, 64, gen=g, device="cuda")
    with pytest.raises(ValueError, match="^impl: "):
        mla.mla_decode(q2, kv2, bt2, sl2, mla.mla_metadata(sl2, 1, 64), impl=impl)


@pytest.mark.gpu
@pytest.mark.parametrize("cfg", ["warp", (4, 1, 2), (1, 4, 12), (8, 1, 1), (2, 2, 3)])
def test_combine_configs(cfg, monkeypatch):
    """Combine kernels (warp; ring: rows per CTA x groups per row x stages) on 15 query rows (not a multiple of the
    rows per CTA), many splits, empty and one-token requests and splits that see no key of some
    rows (the causal tail of a 65- and a 129-token request cut into one-tile parts)."""
    from jitkern.ops import mla
    monkeypatch.setitem(mla.COMBINE_CONFIGS, "narrow", cfg)
    g = torch.Generator().manual_seed(len(str(cfg)))
    lens = [2000, 0, 1, 65, 129, 2]
    q, kv, bt, sl = _make_inputs(lens, 3, 5, gen=g, device="cuda")
    md = mla.mla_metadata(sl, 3, 5, num_parts=90)
    out = torch.full((len(lens), 3, 5, 512), float("nan"), dtype=torch.bfloat16, device="cuda")
    lse = torch.full((len(lens), 5, 3), float("nan"), dtype=torch.float32, device="cuda")
    mla.mla_decode(q, kv, bt, sl, md, out=(out, lse), impl="wgmma")
    _check_against_ref(q, kv, bt, sl, out, lse)
    assert md.num_splits.max().item() > 12  # the ring wraps for every config


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["wgmma", "wgmma_wc"])
def test_many_splits_combine(impl):
    """One request split over ~626 parts: the wide combine cycles its ring of shared-memory stages ~20 times."""
    from jitkern.ops import mla
    g = torch.Generator().manual_seed(13)
    lens = [40000, 3]
    q, kv, bt, sl = _make_inputs(lens, 1, 16, gen=g, device="cuda")
    md = mla.mla_metadata(sl, 1, 16, num_parts=1200)  # ~1 tile per part: ~626 splits
    out = torch.full((2, 1, 16, 512), float("nan"), dtype=torch.bfloat16, device="cuda")
    lse = torch.full((2, 16, 1), float("nan"), dtype=torch.float32, device="cuda")
    mla.mla_decode(q, kv, bt, sl, md, out=(out, lse), impl=impl)
    assert md.num_splits[0].item() > 512
    _check_against_ref(q, kv, bt, sl, out, lse)
