"""DSpark Markov draft head: the reference's exact logit definition and sm_90a compiles (CPU);
the tensor-core kernel against the reference bit for bit (greedy, including near ties decided by
fp32 rounding alone) and in distribution (sampled) on the GPU."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from jitkern.ops import speculative as ops
from jitkern.reference import speculative as ref
from stats_tools import chi2_pvalue

# ---------------------------------------------------------------------------------------------
# CPU
# ---------------------------------------------------------------------------------------------


def _bf16(shape, g, scale=1.0):
    return (torch.randn(shape, generator=g) * scale).to(torch.bfloat16)


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 3), V=st.integers(1, 40), r=st.sampled_from([64, 128]), seed=st.integers(0, 2**31))
def test_markov_logits_are_sequential_fp32(b, V, r, seed):
    """markov_logits is exactly the documented order: numpy float32, product rounded, then added,
    columns in increasing order, base last."""
    g = torch.Generator().manual_seed(seed)
    base, h, w = _bf16((b, V), g, 3.0), _bf16((b, r), g), _bf16((V, r), g)
    got = ref.markov_logits(base, h, w).numpy()
    hf, wf, bf = h.float().numpy(), w.float().numpy(), base.float().numpy()
    want = np.zeros((b, V), dtype=np.float32)
    for c in range(r):
        want = (want + (wf[None, :, c] * hf[:, c:c + 1]).astype(np.float32)).astype(np.float32)
    want = (bf + want).astype(np.float32)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_markov_logits_order_matters():
    """The definition is not vacuous: the same products summed in another order round differently
    (so a kernel that got the order wrong would be caught by the near-tie GPU test)."""
    g = torch.Generator().manual_seed(0)
    r = 128
    h, w = _bf16((1, r), g), _bf16((64, r), g)
    fwd = ref.markov_logits(torch.zeros(1, 64), h, w)
    rev = ref.markov_logits(torch.zeros(1, 64), h.flip(1), w.flip(1))
    assert not torch.equal(fwd, rev)


def test_markov_reference_integer_exact():
    g = torch.Generator().manual_seed(0)
    base = torch.randint(-4, 5, (2, 3, 16), generator=g).float()
    w_in = torch.randint(-2, 3, (16, 64), generator=g).float()
    w_out = torch.randint(-2, 3, (16, 64), generator=g).float()
    prev = torch.tensor([3, 9])
    out = ref.markov_draft_greedy(base, prev, w_in, w_out)
    p = prev.clone()
    for t in range(3):  # float64 recomputation agrees (integer data: exact)
        lg = base[:, t].double() + w_in[p].double() @ w_out.double().t()
        p = lg.argmax(-1)
        assert torch.equal(out[:, t].long(), p)
    assert torch.equal(ref.torch_markov_draft(base, prev, w_in, w_out), out)


def test_markov_configs():
    assert [ops.markov_mtiles(b, 128) for b in (1, 16, 17, 32, 33, 64, 500)] == [1, 1, 2, 2, 4, 4, 4]
    assert ops.markov_mtiles(64, 256) == 2
    for dt in (2, 4):
        for r in (64, 128, 256):
            for b in (1, 32, 64):
                mt = ops.markov_mtiles(b, r)
                cb = ops.markov_cache_blocks(129280, 132, dt, r, mt)
                assert ops.markov_smem_bytes(dt, r, mt, cb) <= ops._MARKOV_SMEM_LIMIT
                assert ops.markov_smem_bytes(dt, r, mt, cb + 1) > ops._MARKOV_SMEM_LIMIT or cb == {64: 4, 128: 4, 256: 8}[r]
    # bf16 r=128 (the bench shape): most of each warp's 4 blocks stay on chip
    assert ops.markov_cache_blocks(129280, 132, 2, 128, 1) == 3 and ops.markov_cache_blocks(129280, 132, 2, 128, 4) == 2
    assert ops.markov_cache_blocks(1000, 132, 2, 128, 1) == 1


def _markov_compile_specs():
    specs = []
    for dt in (torch.bfloat16, torch.float32):
        for r in (64, 128, 256):
            specs.append(ops.markov_spec(dt, torch.int64, r, False, ops.markov_mtiles(64, r), True))
        specs.append(ops.markov_spec(dt, torch.int32, 128, True, 4, True))
        for r in (64, 128, 256):  # the block-race sampler (one Philox block per lane block and request pair)
            specs.append(ops.markov_spec(dt, torch.int32, r, True, ops.markov_mtiles(64, r), True, sampler="block"))
    specs.append(ops.markov_spec(torch.bfloat16, torch.int64, 128, False, 1, False))
    specs.append(ops.markov_spec(torch.bfloat16, torch.int64, 128, True, 1, True))
    specs.append(ops.markov_spec(torch.bfloat16, torch.int64, 128, True, 1, False, sampler="block"))
    for dt in (torch.bfloat16, torch.float32):
        for r in (64, 128, 256):
            specs.append(ops.markov_exact_spec(dt, torch.int64, r))
    specs.append(ops.markov_exact_spec(torch.bfloat16, torch.int32, 128))
    return specs


def test_markov_compile_sm90a_no_spills():
    from jitkern.runtime import compile_spec
    for spec in _markov_compile_specs():
        entry, _ = compile_spec(spec, "sm_90a")
        assert entry.meta["ptxas"].get("spill_stores", 0) == 0, (spec.name, entry.meta["ptxas"])
    kinds = [s.name for s in ops.warmup_specs([{"kinds": ["markov"], "rank": 128}], None)]
    assert len(kinds) == 7 and all("markov_draft" in n for n in kinds)  # 3 tile counts x greedy/sampled + exact


def test_markov_sampler_spec():
    args = (torch.bfloat16, torch.int64, 128)
    assert ops.markov_spec(*args, True, 4, sampler="block").defines == (("JITKERN_MARKOV_BLOCK_RACE", "1"),)
    assert ops.markov_spec(*args, True, 4, sampler="token").defines == ()
    assert ops.markov_spec(*args, False, 4, sampler="block").defines == ()  # greedy: no sampler
    with pytest.raises(ValueError, match="^sampler:"):
        ops.markov_spec(*args, True, 4, sampler="gumbel")


def test_markov_validation_names_argument():
    w = torch.zeros(64, 64, dtype=torch.bfloat16)
    for bad in (torch.zeros(2, 3, 64, dtype=torch.float16), torch.zeros(3, 64)):
        with pytest.raises(ValueError, match="base_logits"):
            ops.markov_draft(bad, torch.zeros(2, dtype=torch.int64), w, w)


@pytest.mark.gpu
def test_markov_validation_names_every_argument():
    """Each bad argument raises ValueError naming it; nothing is launched."""
    V, r = 64, 64
    base, prev = torch.randn(2, 3, V, device="cuda"), torch.zeros(2, dtype=torch.int64, device="cuda")
    bf = lambda *shape: torch.randn(*shape, device="cuda").to(torch.bfloat16)  # noqa: E731
    w = bf(V, r)
    cases = [
        ("first_prev", dict(first_prev=torch.zeros(3, dtype=torch.int64, device="cuda"))),  # b = 2 requests
        ("first_prev", dict(first_prev=torch.zeros(2, device="cuda"))),                      # not an index dtype
        ("w_in", dict(w_in=bf(V, 96), w_out=bf(V, 96))),                                      # r not supported
        ("w_in", dict(w_in=bf(V + 1, r))),                                                    # rows != V
        ("w_in", dict(w_in=torch.randn(V, r, device="cuda"))),                                # fp32
        ("w_out", dict(w_out=bf(V, 2 * r))),                                                  # rank differs from w_in
        ("w_out", dict(w_out=bf(r, V).t())),                                                  # not contiguous
        ("w_out", dict(w_out=w.cpu())),                                                       # another device
        ("temperature", dict(temperature=-0.5)),
        ("temperature", dict(temperature=float("nan"))),
        ("seed", dict(seed=-1)),
        ("seed", dict(seed=2 ** 64)),
        ("out", dict(out=torch.empty(2, 4, dtype=torch.int32, device="cuda"))),              # [b, k] = [2, 3]
        ("out", dict(out=torch.empty(2, 3, dtype=torch.int64, device="cuda"))),
    ]
    for name, bad in cases:
        args = dict(base_logits=base, first_prev=prev, w_in=w, w_out=w, temperature=0.0, seed=0)
        args.update(bad)
        with pytest.raises(ValueError, match=name):
            ops.markov_draft(**args)


# ---------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------

def _inputs(b, k, V, r, dtype, seed, integer=False):
    g = torch.Generator().manual_seed(seed)
    if integer:  # small integers: every summation order is exact, and ties are frequent
        base = torch.randint(-4, 5, (b, k, V), generator=g).float()
        w_in = torch.randint(-2, 3, (V, r), generator=g).float()
        w_out = torch.randint(-2, 3, (V, r), generator=g).float()
    else:
        base = torch.randn(b, k, V, generator=g) * 2
        w_in = torch.randn(V, r, generator=g) * 0.3
        w_out = torch.randn(V, r, generator=g) * 0.3
    prev = torch.randint(0, V, (b,), generator=g)
    return (base.to(dtype).cuda(), prev.cuda(), w_in.to(torch.bfloat16).cuda(), w_out.to(torch.bfloat16).cuda())


def _poisoned(b, k):
    return torch.full((b, k), -77, dtype=torch.int32, device="cuda")


def _check_greedy(base, prev, w_in, w_out):
    b, k, _ = base.shape
    got = ops.markov_draft(base, prev, w_in, w_out, 0.0, out=_poisoned(b, k))
    want = ref.markov_draft_greedy(base, prev, w_in, w_out)
    assert torch.equal(got, want), (got != want).nonzero()[:8].tolist()
    return got


@pytest.mark.gpu
@settings(max_examples=30, deadline=None)
@given(b=st.integers(1, 80), k=st.integers(1, 8), V=st.sampled_from([5, 64, 1000, 4099, 32000, 129280]),
       r=st.sampled_from([64, 128, 256]), dtype=st.sampled_from([torch.bfloat16, torch.float32]),
       integer=st.booleans(), tok32=st.booleans(), seed=st.integers(0, 2**31))
def test_markov_greedy_bit_exact(b, k, V, r, dtype, integer, tok32, seed):
    """Real-valued and integer (tie-heavy) data, batches over one pass (> 64 requests), vocabularies
    with fewer rows than CTAs, not a multiple of 8 (scalar base path), and the full 129280."""
    base, prev, w_in, w_out = _inputs(b, k, V, r, dtype, seed, integer)
    if tok32:
        prev = prev.int()
    got = _check_greedy(base, prev, w_in, w_out)
    assert torch.equal(ops.markov_draft(base, prev, w_in, w_out, 0.0), got)  # scratch left zeroed


@pytest.mark.gpu
@settings(max_examples=12, deadline=None)
@given(b=st.integers(1, 70), r=st.sampled_from([64, 128, 256]), adjacent=st.booleans(), seed=st.integers(0, 2**31))
def test_markov_greedy_rounding_ties(b, r, adjacent, seed):
    """Twins: w_out rows that are column permutations of each other (identical exact dot
    products, different fp32 rounding in the reference's order) carrying the largest base logit.
    Only the exact recomputation in the reference's order can pick the same token."""
    V, k = 129280, 3
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(b, k, V, generator=g)
    # h = 0.5 everywhere (bf16-exact): a row whose columns are permuted has the same products in
    # another order, hence the same exact dot product and (with magnitudes spread over 2^+-12) a
    # different fp32 rounding. Twin groups have large positive dot products: they hold the maximum.
    w_in = torch.full((V, r), 0.5, dtype=torch.bfloat16)
    w_out = (torch.randn(V, r, generator=g) * 0.01).to(torch.bfloat16)

    def seq_sum(row):  # the row's reference logit for h = w_in[any] (base 0)
        return float(ref.markov_logits(torch.zeros(1, 1), w_in[:1], row.unsqueeze(0))[0, 0])

    # Six groups of 8 distinct tokens, no token in two groups (a shared token would let another
    # group's value into the leading group's top 8): 8 consecutive ids each, or 48 random ids.
    if adjacent:
        groups = [[8 * v + i for i in range(8)] for v in torch.randperm(V // 8, generator=g)[:6].tolist()]
    else:
        ids = torch.randperm(V, generator=g)[:48].tolist()
        groups = [ids[8 * grp:8 * grp + 8] for grp in range(6)]
    for twins in groups:
        rounded_apart = False
        for _ in range(20):  # a wide row with a permutation that rounds apart (most have many)
            wide = torch.randn(r, generator=g).abs() * torch.exp2(torch.randint(-12, 12, (r,), generator=g).float())
            w_out[twins[0]] = wide.to(torch.bfloat16)
            first = seq_sum(w_out[twins[0]])
            for tw in twins[1:]:
                # a permutation that the reference's order rounds to another value, else any
                for _ in range(50):
                    w_out[tw] = w_out[twins[0]][torch.randperm(r, generator=g)]
                    if seq_sum(w_out[tw]) != first:
                        rounded_apart = True
                        break
            if rounded_apart:
                break
        assert rounded_apart, "test construction: no twin group that rounds apart"
        base[:, :, twins] = 0.0
    prev = torch.randint(0, V, (b,), generator=g)
    base, prev, w_in, w_out = base.cuda(), prev.cuda(), w_in.cuda(), w_out.cuda()
    got = _check_greedy(base, prev, w_in, w_out)
    # the reference's choice really depends on rounding for some request (the test has teeth)
    lg = ref.markov_logits(base[:, 0], w_in[prev], w_out)
    top8 = lg.topk(8, -1).values  # the leading twin group: equal exact sums, rounded apart
    spread = top8[:, 0] - top8[:, -1]
    assert bool(((spread > 0) & (spread < 1e-5 * top8[:, 0].abs())).any()), (spread[:4].tolist(), top8[0].tolist())
    del got


@pytest.mark.gpu
@pytest.mark.parametrize("exact_max_b", [0, 2])  # 0: tensor-core kernel for every batch
@pytest.mark.parametrize("b", [1, 2])
@pytest.mark.parametrize("V,r,dtype,integer", [(5, 64, torch.float32, False), (4099, 128, torch.bfloat16, True),
                                               (129280, 128, torch.bfloat16, False), (32000, 256, torch.float32, False)])
def test_markov_small_batch_both_kernels(exact_max_b, b, V, r, dtype, integer, monkeypatch):
    """Tiny greedy batches go to markov_draft_exact by default; both kernels agree with the
    reference bit for bit (vocabularies with fewer rows than CTAs, not a multiple of 8, ties,
    -inf / NaN base logits), and leave their scratch zeroed for the next call."""
    monkeypatch.setattr(ops, "MARKOV_EXACT_MAX_B", exact_max_b)
    base, prev, w_in, w_out = _inputs(b, 5, V, r, dtype, V + b, integer)
    base[0, 1, ::3] = float("-inf")
    base[-1, 2, V // 2] = float("nan")
    got = _check_greedy(base, prev, w_in, w_out)
    assert torch.equal(ops.markov_draft(base, prev, w_in, w_out, 0.0), got)


@pytest.mark.gpu
def test_markov_greedy_special_values():
    """-inf (masked) tokens, a NaN logit (torch.argmax: first NaN wins), an all -inf row, +inf,
    and the last column: the fallback paths agree with the reference."""
    b, k, V, r = 6, 3, 129280, 128
    base, prev, w_in, w_out = _inputs(b, k, V, r, torch.float32, 3)
    base[0, :, ::2] = float("-inf")
    base[1, 1, 5000] = float("nan")
    base[1, 1, 100000] = float("nan")
    base[2, 0, :] = float("-inf")
    base[3, 2, 77] = float("inf")
    base[4, :, V - 1] = 1e4
    base[5, 0, :] = 0.0  # all equal base: the dot products decide
    _check_greedy(base, prev, w_in, w_out)
    _check_greedy(base.to(torch.bfloat16), prev, w_in, w_out)


@pytest.fixture(params=ops.MARKOV_SAMPLERS)
def sampler(request, monkeypatch):
    """Each sampled markov GPU test runs with every sampler of ops.MARKOV_SAMPLERS."""
    monkeypatch.setattr(ops, "MARKOV_SAMPLER", request.param)
    return request.param


@pytest.mark.gpu
def test_markov_unaligned_base_and_graph_capture(sampler):
    b, k, V, r = 5, 4, 4100, 128
    base, prev, w_in, w_out = _inputs(b, k, V, r, torch.bfloat16, 11)
    view = torch.zeros(b * k * V + 1, dtype=torch.bfloat16, device="cuda")[1:].view(b, k, V)  # odd offset: scalar path
    view.copy_(base)
    _check_greedy(view, prev, w_in, w_out)
    want = ref.markov_draft_greedy(base, prev, w_in, w_out)
    out, outs = _poisoned(b, k), _poisoned(b, k)
    ops.markov_draft(base, prev, w_in, w_out, 0.0, out=out)
    sref = ops.markov_draft(base, prev, w_in, w_out, 0.7, seed=4)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ops.markov_draft(base, prev, w_in, w_out, 0.0, out=out)
        ops.markov_draft(base, prev, w_in, w_out, 0.7, seed=4, out=outs)
    for _ in range(3):
        out.fill_(-5)
        outs.fill_(-5)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, want) and torch.equal(outs, sref)


@pytest.mark.gpu
@pytest.mark.parametrize("V,T", [(8, 0.8), (200, 1.5), (203, 0.6)])
def test_markov_sampled_distribution(V, T, sampler):
    """Many identical requests: position 0 follows softmax(logits / T) and (V = 8) the pair
    (position 0, position 1) follows p0(y0) p1(y1 | y0) (chi-square, p > 1e-3). V = 203 ends in a
    partial lane block (the block race's tail)."""
    r, k, b = 64, 2, 20000
    base, prev, w_in, w_out = _inputs(1, k, V, r, torch.float32, 5)
    base, prev = base.expand(b, k, V).contiguous(), prev.expand(b).contiguous()
    draws = [ops.markov_draft(base, prev, w_in, w_out, T, seed=s, out=_poisoned(b, k)) for s in range(50)]
    assert torch.equal(draws[0], ops.markov_draft(base, prev, w_in, w_out, T, seed=0))  # deterministic
    assert not torch.equal(draws[0], draws[1])
    toks = torch.cat(draws).long().cpu()
    assert torch.all((toks >= 0) & (toks < V))
    N = toks.shape[0]
    p0 = ref.markov_step_probs(base[:1].cpu(), torch.zeros(1, k, dtype=torch.long), prev[:1].cpu(),
                               w_in.cpu(), w_out.cpu(), T)[0, 0]
    pval, stat, df = chi2_pvalue(torch.bincount(toks[:, 0], minlength=V), p0 * N)
    assert pval > 1e-3, (pval, stat, df)
    if V == 8:
        joint = torch.zeros(V, V, dtype=torch.float64)
        for y0 in range(V):
            p1 = ref.markov_step_probs(base[:1].cpu(), torch.tensor([[y0, 0]]), prev[:1].cpu(), w_in.cpu(),
                                       w_out.cpu(), T)[0, 1]
            joint[y0] = p0[y0] * p1
        pval, stat, df = chi2_pvalue(torch.bincount(toks[:, 0] * V + toks[:, 1], minlength=V * V),
                                      joint.reshape(-1) * N)
        assert pval > 1e-3, (pval, stat, df)


@pytest.mark.gpu
@settings(max_examples=8, deadline=None)
@given(b=st.integers(1, 80), r=st.sampled_from([64, 128, 256]), dtype=st.sampled_from([torch.bfloat16, torch.float32]),
       seed=st.integers(0, 2**31))
def test_markov_sampled_masked_tokens_and_low_temperature(b, r, dtype, seed, sampler):
    """Masked (-inf) tokens are never drawn; at temperature 1e-6 the sample is the greedy token
    whenever the reference's top two logits are far apart."""
    k, V = 4, 32000
    base, prev, w_in, w_out = _inputs(b, k, V, r, dtype, seed)
    base[:, :, 1::2] = float("-inf")
    got = ops.markov_draft(base, prev, w_in, w_out, 1.0, seed=seed, out=_poisoned(b, k))
    assert torch.all((got >= 0) & (got < V) & (got % 2 == 0))
    cold = ops.markov_draft(base, prev, w_in, w_out, 1e-6, seed=seed, out=_poisoned(b, k))
    greedy = ref.markov_draft_greedy(base, prev, w_in, w_out)
    pv = torch.cat([prev.view(b, 1).long(), greedy[:, :-1].long()], 1)
    for t in range(k):
        top2 = ref.markov_logits(base[:, t], w_in[pv[:, t]], w_out).topk(2, -1).values
        same_prefix = (cold[:, :t] == greedy[:, :t]).all(1)  # later positions condition on the prefix
        clear = ((top2[:, 0] - top2[:, 1]) > 1e-3) & same_prefix
        assert torch.equal(cold[clear, t], greedy[clear, t])


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1.0, 1e-3])
def test_markov_sampled_special_values(T, sampler):
    """NaN and -inf logits are never drawn; a lone +inf logit is always drawn; a finite huge logit
    (M / T far past FLT_MAX at T = 1e-3) is drawn like +inf; rows mixing them stay in range."""
    b, k, V, r = 8, 2, 4100, 128
    base, prev, w_in, w_out = _inputs(b, k, V, r, torch.float32, 21)
    base[0, :, 1::2] = float("nan")       # half the row NaN, half finite
    base[1, :, :] = float("-inf")
    base[1, :, 4097] = 0.0                 # one drawable token, in the partial last lane block
    base[2, :, 123] = float("inf")
    base[3, :, 2000] = 3e38
    base[4, :, :] = float("nan")
    base[4, :, 17] = 1.0                   # a lone finite logit in a NaN row
    for seed in range(4):
        got = ops.markov_draft(base, prev, w_in, w_out, T, seed=seed, out=_poisoned(b, k)).cpu()
        assert torch.all((got >= 0) & (got < V)), got
        assert torch.all(got[0] % 2 == 0)
        assert torch.all(got[1] == 4097) and torch.all(got[2] == 123) and torch.all(got[3] == 2000)
        assert torch.all(got[4] == 17)


@pytest.mark.gpu
@pytest.mark.parametrize("temp", [0.0, 1.0])
@pytest.mark.parametrize("b", [3, 40])
def test_small_markov(temp, b, sampler):
    """Small case for compute-sanitizer (memcheck / racecheck): both request-tile counts (and, at
    temperature 1, every sampler)."""
    if temp == 0.0 and sampler != ops.MARKOV_SAMPLERS[0]:
        pytest.skip("greedy: the sampler does not apply (run once)")
    k, V, r = 3, 4100, 64
    base, prev, w_in, w_out = _inputs(b, k, V, r, torch.float32, b, integer=True)
    got = ops.markov_draft(base, prev, w_in, w_out, temp, seed=2, out=_poisoned(b, k))
    assert torch.all((got >= 0) & (got < V))
    if temp == 0.0:
        assert torch.equal(got, ref.markov_draft_greedy(base, prev, w_in, w_out))
