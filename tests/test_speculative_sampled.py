"""Sampled verification with top-k / top-p, and sampled token trees: the reference math (CPU:
filter semantics against an independent sort-based definition, exactness of the schemes by
enumeration) and the kernels in distribution (chi-square) and structure on the GPU."""
import pytest
import torch
from hypothesis import assume, given, settings, strategies as st

from jitkern.ops import speculative as ops
from jitkern.reference import speculative as ref
from stats_tools import assert_counts_follow, assert_detects_1pct_bias, chi2_pvalue
from test_speculative import _chain_tree, _poison

# ---------------------------------------------------------------------------------------------
# CPU: reference math
# ---------------------------------------------------------------------------------------------


def _sorted_filter(x, temp, top_k, top_p):
    """Independent definition (float64, one row): sort descending; top-k keeps values >= the
    k-th; top-p keeps the sorted prefix until the mass reaches top_p, extended to its ties."""
    V = x.numel()
    order = torch.argsort(x.double(), descending=True, stable=True)
    xs = x[order]
    keep = torch.ones(V, dtype=torch.bool)
    if top_k is not None and 0 < top_k < V:
        keep = x >= xs[top_k - 1]
    z = (x.double() / temp).masked_fill(~keep, float("-inf"))
    p = torch.softmax(z, 0)
    if top_p is not None and top_p < 1:
        cum = torch.cumsum(p[order], 0)
        last = int(torch.nonzero(cum >= top_p - 1e-15)[0]) if bool((cum >= top_p - 1e-15).any()) else V - 1
        keep &= x >= xs[last]
        p = torch.softmax((x.double() / temp).masked_fill(~keep, float("-inf")), 0)
    return p


def _top_p_margin(x, temp, top_k, top_p):
    """Distance of top_p from every cumulative mass at a value-group boundary (after top-k)."""
    p = ref.target_probs(x.view(1, -1), temp, top_k, None)[0]
    _, cums = ref.value_group_mass(x, p)
    return float((cums - top_p).abs().min())


@given(V=st.integers(1, 30), levels=st.sampled_from([None, 3, 6]), temp=st.sampled_from([0.3, 1.0, 2.5]),
       top_k=st.one_of(st.none(), st.integers(1, 35)), top_p=st.one_of(st.none(), st.floats(0.01, 1.0)),
       seed=st.integers(0, 2**31))
def test_target_probs_filters_match_sorted_definition(V, levels, temp, top_k, top_p, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, levels, (V,), generator=g).float() if levels else torch.randn(V, generator=g) * 2
    if top_p is not None and top_p < 1:
        assume(_top_p_margin(x, temp, top_k, top_p) > 1e-9)
    p = ref.target_probs(x.view(1, -1), temp, top_k, top_p)[0]
    assert torch.allclose(p, _sorted_filter(x, temp, top_k, top_p), atol=1e-12)
    kept = p > 0
    assert abs(float(p.sum()) - 1) < 1e-12
    if top_k is not None and top_k < V and top_p is None:
        assert int(kept.sum()) >= top_k  # ties at the k-th value all stay
        assert int(kept.sum()) == int((x >= torch.sort(x, descending=True).values[top_k - 1]).sum())
    # a kept token is never less likely than a dropped one
    if bool((~kept).any()):
        assert float(x[kept].min()) > float(x[~kept].max())


@given(V=st.integers(2, 9), k=st.integers(1, 3), temp=st.sampled_from([0.5, 1.0]),
       top_k=st.one_of(st.none(), st.integers(1, 9)), top_p=st.one_of(st.none(), st.floats(0.05, 0.99)),
       seed=st.integers(0, 2**31))
def test_sampled_reference_filtered_first_token_is_p(V, k, temp, top_k, top_p, seed):
    """Averaged over drafts x ~ q, the first emitted token follows the filtered p_0 exactly."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(k + 1, V, generator=g) * 2
    q = torch.softmax(torch.randn(k, V, generator=g), -1)
    drafts = torch.multinomial(q, 1, generator=g).view(-1)
    cu = torch.tensor([0, k])
    p0 = ref.target_probs(logits[:1], temp, top_k, top_p)[0]
    marg = torch.zeros(V, dtype=torch.float64)
    for x in range(V):
        dx = drafts.clone()
        dx[0] = x
        (d,) = ref.sampled_outcome_probs(logits, dx, q, cu, temp, top_k, top_p)
        assert abs(float(d.sum()) - 1) < 1e-12
        first = d[0].clone()
        first[x] += float(d[1:].sum())
        marg += float(q[0, x]) * first
    assert torch.allclose(marg, p0, atol=1e-12)


def _tiny_tree(g, nn, V, chain=False):
    par = [-1] + [c - 1 if chain else int(torch.randint(0, c, (1,), generator=g)) for c in range(1, nn)]
    q = torch.softmax(torch.randn(nn, V, generator=g) * 1.5, -1)
    toks = [0] + [int(torch.multinomial(q[c], 1, generator=g)) for c in range(1, nn)]
    return torch.tensor(toks), torch.tensor(par, dtype=torch.int32), q


@given(nn=st.integers(1, 7), V=st.integers(2, 6), temp=st.sampled_from([0.0, 0.7, 1.0]),
       top_k=st.one_of(st.none(), st.integers(1, 6)), seed=st.integers(0, 2**31))
def test_tree_reference_first_token_is_p(nn, V, temp, top_k, seed):
    """Multi-candidate rejection sampling is exact: averaged over the root's children's tokens
    (each drawn independently from its q row), the first emitted token follows p_root."""
    g = torch.Generator().manual_seed(seed)
    toks, par, q = _tiny_tree(g, nn, V)
    logits = torch.randn(nn, V, generator=g) * 2
    cu = torch.tensor([0, nn])
    kids = [c for c in range(1, nn) if int(par[c]) == 0][:3]
    marg = torch.zeros(V, dtype=torch.float64)
    for assign in torch.cartesian_prod(*[torch.arange(V)] * len(kids)).view(-1, len(kids)) if kids else [None]:
        t, w = toks.clone(), 1.0
        for c, x in zip(kids, assign.tolist() if assign is not None else []):
            t[c] = x
            w *= float(q[c, x])
        (d,) = ref.tree_sampled_outcome_probs(logits, t, par, q, cu, temp, top_k)
        assert abs(sum(d.values()) - 1) < 1e-12
        for (path, y), pr in d.items():
            marg[int(t[path[1]]) if len(path) > 1 else y] += w * pr
    if len([c for c in range(1, nn) if int(par[c]) == 0]) <= 3:
        assert torch.allclose(marg, ref.target_probs(logits[:1], temp, top_k)[0], atol=1e-12)


@given(k=st.integers(0, 5), V=st.integers(2, 8), temp=st.sampled_from([0.0, 0.5, 1.0]),
       top_p=st.one_of(st.none(), st.floats(0.1, 0.95)), seed=st.integers(0, 2**31))
def test_tree_reference_chain_equals_chain(k, V, temp, top_p, seed):
    """A chain given as a tree has exactly the chain scheme's outcome distribution."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(k + 1, V, generator=g) * 2
    q = torch.softmax(torch.randn(max(k, 1), V, generator=g), -1)[:k]
    drafts = torch.multinomial(q, 1, generator=g).view(-1) if k else torch.empty(0, dtype=torch.long)
    cu = torch.tensor([0, k])
    (d,) = ref.sampled_outcome_probs(logits, drafts, q, cu, temp, None, top_p)
    toks, par, cun = _chain_tree([k], logits, drafts, cu)
    qt = torch.cat([torch.zeros(1, V), q])  # row of node j+1 = q of draft j; root row unused
    (t,) = ref.tree_sampled_outcome_probs(logits, toks, par, qt, cun, temp, None, top_p)
    got = torch.zeros(k + 1, V, dtype=torch.float64)
    for (path, y), pr in t.items():
        assert list(path) == list(range(len(path)))
        got[len(path) - 1, y] += pr
    assert torch.allclose(got, d, atol=1e-12)


def test_tree_reference_sampler_matches_enumeration():
    g = torch.Generator().manual_seed(5)
    V, nn, N = 4, 5, 4000
    toks, par, q = _tiny_tree(g, nn, V)
    logits = torch.randn(nn, V, generator=g)
    (d,) = ref.tree_sampled_outcome_probs(logits, toks, par, q, torch.tensor([0, nn]), 0.8)
    cells = {key: i for i, key in enumerate(d)}
    L = logits.repeat(N, 1)
    acc, out, path = ref.verify_tree_sampled(L, toks.repeat(N), par.repeat(N), q.repeat(N, 1),
                                             torch.arange(N + 1) * nn, 0.8, max_depth=nn - 1, generator=g)
    obs = torch.zeros(len(cells))
    for i in range(N):
        a = int(acc[i])
        obs[cells[(tuple(path[i, :a + 1].tolist()), int(out[i, a]))]] += 1
    exp = torch.tensor(list(d.values())) * N
    pval, stat, df = chi2_pvalue(obs, exp)
    assert pval > 1e-3, (pval, stat, df)


def test_sampled_knob_validation_names_argument():
    ref_t = torch.zeros(1)
    for kw, name in [({"top_k": 0}, "top_k"), ({"top_k": 1.5}, "top_k"), ({"top_k": True}, "top_k"),
                     ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"temperature": -1.0}, "temperature")]:
        args = {"temperature": 1.0, "top_k": None, "top_p": None, **kw}
        with pytest.raises(ValueError, match=name):
            ops._sampling_knobs(2, ref_t, args["temperature"], args["top_k"], args["top_p"])
    for seed in (-1, 2 ** 64, 1.0):
        with pytest.raises(ValueError, match="seed"):
            ops._check_seed(seed)
    kn = ops._sampling_knobs(2, ref_t, 0.5, 7, 0.9)
    assert (kn.temps, kn.temp, kn.topks, kn.topk, kn.topps) == (None, 0.5, None, 7, None)
    assert abs(kn.topp - 0.9) < 1e-7 and ctypes_sizeof(kn) == 48  # the CUDA struct's layout


def ctypes_sizeof(x):
    import ctypes
    return ctypes.sizeof(x)


@pytest.mark.gpu
def test_sampled_validation_names_argument():
    logits, q = torch.zeros(3, 8, device="cuda"), torch.zeros(2, 8, device="cuda")
    d, cu = torch.zeros(2, dtype=torch.int64, device="cuda"), torch.tensor([0, 2], dtype=torch.int32, device="cuda")
    # b = 1: per-request tensors must be [1]
    for kw, name in [({"top_k": torch.zeros(2, dtype=torch.int32, device="cuda")}, "top_k"),
                     ({"top_k": torch.zeros(1, dtype=torch.int64, device="cuda")}, "top_k"),
                     ({"top_p": torch.zeros(2, dtype=torch.float32, device="cuda")}, "top_p"),
                     ({"top_p": torch.zeros(1, dtype=torch.float32)}, "top_p"),
                     ({"top_p": 0.0}, "top_p"), ({"seed": -1}, "seed")]:
        with pytest.raises(ValueError, match=name):
            ops.verify_sampled(logits, d, q, cu, **kw)
    with pytest.raises(ValueError, match="draft_probs"):
        ops.verify_tree_sampled(logits, torch.zeros(3, dtype=torch.int64, device="cuda"),
                                torch.zeros(3, dtype=torch.int32, device="cuda"), q,
                                torch.tensor([0, 3], dtype=torch.int32, device="cuda"))


# ---------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------

def _filter_arg(v, b, dtype):
    return torch.full((b,), v, dtype=dtype, device="cuda") if v is not None else None


class _filter_path:
    """Context: verify_sampled / verify_tree_sampled with filter_fast on or off (the threshold
    search for every filtered row)."""

    def __init__(self, fast):
        self.fast = fast

    def __enter__(self):
        self.saved, ops.SAMPLED_FILTER_FAST = ops.SAMPLED_FILTER_FAST, self.fast

    def __exit__(self, *exc):
        ops.SAMPLED_FILTER_FAST = self.saved


@pytest.mark.gpu
@settings(max_examples=30, deadline=None)
@given(V=st.sampled_from([300, 4096, 4097, 5003, 129280]), dtype=st.sampled_from([torch.bfloat16, torch.float32]),
       scale=st.sampled_from([1.0, 3.0, 8.0, "ties"]), temp=st.sampled_from([0.6, 1.0, 1.7]),
       top_k=st.sampled_from([None, 1, 5, 50, 256, 300]), top_p=st.sampled_from([None, 0.2, 0.9, 0.995]),
       fast=st.booleans(), seed=st.integers(0, 2**31))
def test_sampled_filter_boundary_tokens(V, dtype, scale, temp, top_k, top_p, fast, seed):
    """The kept set's edge, decided with certainty: the least probable kept token drafted with
    q = p_ref / 2 at it (zero elsewhere) must be accepted (u * q < p for every u < 1), the most
    probable dropped token drafted with q = 1 at it must be rejected (p = 0) and the emitted token
    must be kept; the chain kernel with filter_fast on and off, the tree kernel (threshold search).
    A threshold one tie group off fails. V from the whole-row candidate case (<= 4096) to 129280,
    unaligned rows (5003)."""
    assume(top_k is not None or top_p is not None)
    g = torch.Generator().manual_seed(seed)
    R = 3
    x = torch.randn(R, V, generator=g)
    x = torch.round(x * 2) / 2 if scale == "ties" else x * scale
    x = x.to(dtype)
    if top_p is not None:
        for r in range(R):
            assume(_top_p_margin(x[r].float(), temp, top_k, top_p) > 1e-5)
    P = ref.target_probs(x, temp, top_k, top_p)
    xf = x.float()
    rows, drafts, qs, expect = [], [], [], []
    for r in range(R):
        kept = P[r] > 0
        x_in = int(torch.where(kept, xf[r], torch.inf).argmin())
        q = torch.zeros(V)
        q[x_in] = 0.5 * float(P[r, x_in])
        rows += [x[r], x[r]]
        drafts.append(x_in)
        qs.append(q)
        expect.append(1)
        if not bool(kept.all()):
            x_out = int(torch.where(kept, -torch.inf, xf[r]).argmax())
            q = torch.zeros(V)
            q[x_out] = 1.0
            rows += [x[r], x[r]]
            drafts.append(x_out)
            qs.append(q)
            expect.append(0)
    b = len(drafts)
    logits = torch.stack(rows).cuda()
    dr = torch.tensor(drafts, device="cuda")
    q = torch.stack(qs).cuda()
    cu = torch.arange(b + 1, dtype=torch.int32, device="cuda")
    owner = [r for r in range(R) for _ in range(2 if not bool((P[r] > 0).all()) else 1)]
    with _filter_path(fast):
        acc, out = ops.verify_sampled(logits, dr, q, cu, temp, top_k, top_p, seed=seed, max_num_draft=1,
                                      out=_poison(b, 2))
        toks = torch.stack([torch.zeros_like(dr), dr], 1).reshape(-1)
        par = torch.tensor([-1, 0] * b, dtype=torch.int32, device="cuda")
        qt = torch.stack([torch.zeros_like(q), q], 1).reshape(2 * b, V)
        tacc, tout, _ = ops.verify_tree_sampled(logits, toks, par, qt, cu * 2, temp, top_k, top_p, seed=seed,
                                                max_depth=1)
    for name, a, o in (("chain", acc, out), ("tree", tacc, tout)):
        assert a.tolist() == expect, (name, a.tolist(), expect)
        for i in range(b):
            tok = int(o[i, int(a[i])])
            assert P[owner[i], tok] > 0, (name, i, tok)


@pytest.mark.gpu
@pytest.mark.parametrize("V,k,temp,top_k,top_p,dtype,per_req", [
    (8, 3, 1.0, 3, None, torch.float32, False), (16, 2, 0.7, None, 0.8, torch.bfloat16, False),
    (12, 3, 1.3, 6, 0.7, torch.float32, True), (6, 2, 0.9, 1, None, torch.float32, False)])
@pytest.mark.parametrize("fast", [True, False])
def test_sampled_filtered_chi_square(V, k, temp, top_k, top_p, dtype, per_req, fast):
    """Identical requests: the (accepted, emitted) histogram matches the enumerated distribution
    with top-k / top-p (chi-square p > 1e-3, sample large enough to catch a 1% bias); filter_fast
    (whole-row candidates at these V) and the threshold search."""
    N = 2_000_000
    g = torch.Generator().manual_seed(99 + V)
    base = (torch.randn(k + 1, V, generator=g) * 1.5).to(dtype)
    q = torch.softmax(torch.randn(k, V, generator=g), -1)
    drafts = torch.multinomial(q, 1, generator=g).view(-1)
    if top_p is not None:
        for r in range(k + 1):
            assert _top_p_margin(base[r].float(), temp, top_k, top_p) > 1e-4
    (dist,) = ref.sampled_outcome_probs(base, drafts, q, torch.tensor([0, k]), temp, top_k, top_p)
    cu = torch.arange(N + 1, device="cuda", dtype=torch.int32) * k
    tk = _filter_arg(top_k, N, torch.int32) if per_req else top_k
    tp = _filter_arg(top_p, N, torch.float32) if per_req else top_p
    with _filter_path(fast):
        acc, out = ops.verify_sampled(base.cuda().repeat(N, 1), drafts.cuda().repeat(N), q.cuda().repeat(N, 1), cu,
                                      temp, tk, tp, seed=7, max_num_draft=k, out=_poison(N, k + 1))
    acc, out = acc.long(), out.long()
    assert torch.all((acc >= 0) & (acc <= k))
    emitted = out.gather(1, acc.view(-1, 1)).view(-1)
    obs = torch.bincount((acc * V + emitted).cpu(), minlength=(k + 1) * V)
    exp = dist.reshape(-1) * N
    assert_counts_follow(obs, exp, N)


@pytest.mark.gpu
@settings(max_examples=20)
@given(ks=st.lists(st.integers(0, 6), min_size=1, max_size=6), V=st.sampled_from([9, 1000, 4097, 129280]),
       dtype=st.sampled_from([torch.bfloat16, torch.float32]), temp=st.sampled_from([0.0, 0.7, 1.0]),
       top_k=st.sampled_from([None, 1, 7, 50, 2000]), top_p=st.sampled_from([None, 0.3, 0.9]),
       per_req=st.booleans(), seed=st.integers(0, 2**40))
def test_sampled_filtered_large_vocab(ks, V, dtype, temp, top_k, top_p, per_req, seed):
    """q = the reference's filtered p: every draft is accepted (the kernel's kept set and
    normaliser agree with the reference) and the bonus is a kept token; generic q: accepted
    prefix = drafts, the emitted outcome has positive probability; same seed, same result."""
    g = torch.Generator(device="cuda").manual_seed(seed % 2**31)
    b, n = len(ks), sum(ks)
    cu = torch.tensor([0] + torch.tensor(ks).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    logits = (torch.randn(n + b, V, device="cuda", generator=g) * 4).to(dtype)
    if top_p is not None and temp > 0:
        for r in range(n + b):
            assume(_top_p_margin(logits[r].float().cpu(), temp, top_k, top_p) > 1e-6)
    tk = _filter_arg(top_k, b, torch.int32) if per_req else top_k
    tp = _filter_arg(top_p, b, torch.float32) if per_req else top_p
    P = ref.target_probs(logits.cpu(), temp, top_k, top_p)
    drow = torch.cat([torch.arange(int(cu[i]) + i, int(cu[i + 1]) + i) for i in range(b)]).long()
    q = P[drow].float().cuda()
    dr = torch.multinomial(q, 1, generator=g).view(-1) if n else torch.empty(0, dtype=torch.long, device="cuda")
    acc, out = ops.verify_sampled(logits, dr, q, cu, temp, tk, tp, seed=seed, max_num_draft=6, out=_poison(b, 7))
    assert torch.equal(acc.cpu(), torch.tensor(ks, dtype=torch.int32)), "q == p must accept every draft"
    for i, k in enumerate(ks):
        assert P[int(cu[i]) + i + k, int(out[i, k])] > 0, "bonus outside the kept set"
    qg = torch.softmax(torch.randn(n, V, device="cuda", generator=g), -1)
    dr = torch.multinomial(qg, 1, generator=g).view(-1) if n else dr
    acc, out = ops.verify_sampled(logits, dr, qg, cu, temp, tk, tp, seed=seed, max_num_draft=6, out=_poison(b, 7))
    acc2, out2 = ops.verify_sampled(logits, dr, qg, cu, temp, tk, tp, seed=seed, max_num_draft=6)
    assert torch.equal(acc, acc2) and torch.equal(out, out2)
    dists = ref.sampled_outcome_probs(logits, dr, qg, cu, temp, top_k, top_p)
    for i, k in enumerate(ks):
        a = int(acc[i])
        assert 0 <= a <= k and torch.equal(out[i, :a].long().cpu(), dr[int(cu[i]):int(cu[i]) + a].cpu())
        assert dists[i][a, int(out[i, a])] > 0 and torch.all(out[i, a + 1:] == -1)


def _tree_cells(d):
    return {key: i for i, key in enumerate(sorted(d))}


@pytest.mark.gpu
@pytest.mark.parametrize("nn,V,temp,top_k,chain", [(6, 5, 0.9, None, False), (8, 6, 1.2, 4, False),
                                                   (4, 6, 0.8, None, True), (7, 4, 0.0, None, False)])
def test_tree_sampled_chi_square(nn, V, temp, top_k, chain):
    """Identical tiny trees: the (path, emitted) histogram matches the enumeration (chi-square
    p > 1e-3, powered for a 1% bias); the chain case also against verify_sampled's enumeration."""
    N = 1_000_000
    g = torch.Generator().manual_seed(nn * 7 + V)
    toks, par, q = _tiny_tree(g, nn, V, chain)
    logits = torch.randn(nn, V, generator=g) * 1.5
    (d,) = ref.tree_sampled_outcome_probs(logits, toks, par, q, torch.tensor([0, nn]), temp, top_k)
    cells = _tree_cells(d)
    cun = torch.arange(N + 1, device="cuda", dtype=torch.int32) * nn
    outs = _poison(N, nn) + (_poison(N, nn)[1],)
    acc, out, path = ops.verify_tree_sampled(logits.cuda().repeat(N, 1), toks.cuda().repeat(N), par.cuda().repeat(N),
                                             q.cuda().repeat(N, 1), cun, temp, top_k, seed=11, max_depth=nn - 1, out=outs)
    acc, out, path = acc.cpu().long(), out.cpu().long(), path.cpu().long()
    assert torch.all((acc >= 0) & (acc < nn))
    # encode (path, token) outcomes: path as base-nn digits, then the token
    codes = torch.zeros(N, dtype=torch.long)
    for c in range(nn):
        codes = codes * (nn + 1) + torch.where(c <= acc, path[:, c] + 1, torch.zeros_like(acc))
    codes = codes * V + out.gather(1, acc.view(-1, 1)).view(-1)
    want = {}
    for (pth, y), pr in d.items():
        code = 0
        for c in range(nn):
            code = code * (nn + 1) + (pth[c] + 1 if c < len(pth) else 0)
        want[code * V + y] = pr
    uniq, cnt = torch.unique(codes, return_counts=True)
    assert set(uniq.tolist()) <= set(want), "an impossible (path, token) outcome was emitted"
    keys = sorted(want)
    obs = torch.zeros(len(keys))
    pos = {k: i for i, k in enumerate(keys)}
    for u, c in zip(uniq.tolist(), cnt.tolist()):
        obs[pos[u]] = c
    exp = torch.tensor([want[k] for k in keys], dtype=torch.float64) * N
    if len(keys) == 1:
        return
    pval, stat, df = chi2_pvalue(obs, exp)
    assert pval > 1e-3, (pval, stat, df)
    assert_detects_1pct_bias(exp)
    assert len(cells) == len(keys)


@pytest.mark.gpu
@pytest.mark.parametrize("V,dtype,top_k", [(129280, torch.bfloat16, None), (4097, torch.float32, 20)])
def test_tree_sampled_chain_agrees_with_verify_sampled(V, dtype, top_k):
    """Chains as trees: same random numbers as verify_sampled, so with the same seed the outputs
    agree except where fp32 rounding of the normaliser (split vs whole-row sums) flips a draw."""
    ks = [7, 3, 0, 5] * 16
    g = torch.Generator(device="cuda").manual_seed(3)
    b, n = len(ks), sum(ks)
    cu = torch.tensor([0] + torch.tensor(ks).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    logits = (torch.randn(n + b, V, device="cuda", generator=g) * 2).to(dtype)
    P = ref.target_probs(logits.cpu(), 1.0, top_k)
    drow = torch.cat([torch.arange(int(cu[i]) + i, int(cu[i + 1]) + i) for i in range(b)]).long()
    q = torch.softmax(torch.log(P[drow].float() + 1e-3).cuda() + torch.randn(n, V, device="cuda", generator=g), -1)
    dr = torch.multinomial(q, 1, generator=g).view(-1)
    acc, out = ops.verify_sampled(logits, dr, q, cu, 1.0, top_k, seed=17, max_num_draft=7)
    toks, par, cun = _chain_tree(ks, logits, dr, cu)
    qt = torch.zeros(n + b, V, device="cuda")
    qt[torch.tensor([int(cu[i]) + i + 1 + j for i, k in enumerate(ks) for j in range(k)], device="cuda").long()] = q
    tacc, tout, tpath = ops.verify_tree_sampled(logits, toks, par, qt, cun, 1.0, top_k, seed=17, max_depth=7)
    same = (tacc == acc) & torch.all(tout == out, 1)
    assert float(same.float().mean()) >= 0.98, float(same.float().mean())
    for i in range(b):
        a = int(tacc[i])
        assert tpath[i, :a + 1].tolist() == list(range(a + 1)) and torch.all(tpath[i, a + 1:] == -1)


@pytest.mark.gpu
@settings(max_examples=15)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=5), V=st.sampled_from([2, 7, 1000, 129280]),
       dtype=st.sampled_from([torch.bfloat16, torch.float32]), temp=st.sampled_from([0.0, 0.6, 1.0]),
       top_p=st.sampled_from([None, 0.8]), seed=st.integers(0, 2**31))
def test_tree_sampled_structure(sizes, V, dtype, temp, top_p, seed):
    """Random Eagle-like trees: the path follows parent links from the root, the tokens are the
    path's node tokens, the emitted outcome has positive exact probability; deterministic."""
    g = torch.Generator().manual_seed(seed)
    b = len(sizes)
    rows = sum(sizes)
    logits = (torch.randn(rows, V, generator=g) * 4).to(dtype)  # x4: top-p boundaries rarely within 1e-6
    if top_p is not None and temp > 0:
        for r in range(rows):
            assume(_top_p_margin(logits[r].float(), temp, None, top_p) > 1e-6)
    P = ref.target_probs(logits, temp, None, top_p)
    par, toks, cun = [], [], [0]
    for nn in sizes:
        n0 = cun[-1]
        par += [-1] + [int(torch.randint(0, c, (1,), generator=g)) for c in range(1, nn)]
        toks += [0] + [int(torch.multinomial(P[n0 + par[n0 + c]].float() + 1e-3, 1, generator=g)) for c in range(1, nn)]
        cun.append(n0 + nn)
    q = torch.softmax(torch.randn(rows, V, generator=g), -1)
    for c in range(rows):  # q puts weight on the drafted token, as a real draft would
        q[c, toks[c]] += 1.0
    q /= q.sum(-1, keepdim=True)
    args = (logits.cuda(), torch.tensor(toks, device="cuda"), torch.tensor(par, dtype=torch.int32, device="cuda"),
            q.cuda(), torch.tensor(cun, dtype=torch.int32, device="cuda"), temp, None, top_p)
    depth = 8
    outs = _poison(b, depth + 1) + (_poison(b, depth + 1)[1],)
    acc, out, path = ops.verify_tree_sampled(*args, seed=seed, max_depth=depth, out=outs)
    acc2, out2, path2 = ops.verify_tree_sampled(*args, seed=seed, max_depth=depth)
    assert torch.equal(acc, acc2) and torch.equal(out, out2) and torch.equal(path, path2)
    dists = ref.tree_sampled_outcome_tensors(*[a.cpu() if isinstance(a, torch.Tensor) else a for a in args])
    for i, nn in enumerate(sizes):
        n0, a = cun[i], int(acc[i])
        pth = path[i].tolist()
        if a < 0:  # path longer than max_depth: flagged
            assert max(len(k) for k in dists[i]) > depth + 1 and torch.all(out[i] == -1)
            continue
        assert pth[0] == 0 and all(par[n0 + pth[c + 1]] == pth[c] for c in range(a))
        assert out[i, :a].tolist() == [toks[n0 + pth[c + 1]] for c in range(a)]
        w = dists[i].get(tuple(pth[:a + 1]))
        assert w is not None and float(w[int(out[i, a])]) > 0
        assert all(x == -1 for x in pth[a + 1:]) and torch.all(out[i, a + 1:] == -1)


def _block_bins(V, hot, block):
    """Histogram bins of a token: each hot token alone, every other token pooled by race block."""
    bins = torch.empty(V, dtype=torch.long)
    nb = -(-V // block)
    bins[:] = len(hot) + torch.arange(V) // block
    for i, t in enumerate(hot):
        bins[t] = i
    return bins, len(hot) + nb


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_sampled_multi_block_chi_square(dtype):
    """The two-level race over several race blocks (256 tokens bf16 / 128 fp32, the last one
    partial): with the mass on tokens at block edges and inside blocks of different weights, the
    (accepted, emitted) histogram matches the enumerated distribution, residual and bonus alike."""
    V, k, temp, N = 700, 1, 1.0, 4_000_000
    block = 256 if dtype == torch.bfloat16 else 128
    hot = [0, 3, 127, 128, 255, 256, 300, 511, 512, 640, 698, 699]
    g = torch.Generator().manual_seed(2024)
    base = torch.full((k + 1, V), -2.0) + 0.3 * torch.randn(k + 1, V, generator=g)
    for i, t in enumerate(hot):
        base[:, t] = 2.0 + 0.25 * (i % 5)
    base = base.to(dtype)
    q = torch.softmax(torch.randn(k, V, generator=g) * 2.0, -1)
    q[0, hot[::3]] += 0.05  # part of the hot mass is proposed too, so residuals differ from p
    q[0, hot[1]] += 0.3  # the draft token, over-proposed: rejected about half the time
    q = q / q.sum(-1, keepdim=True)
    drafts = torch.tensor([hot[1]])
    (dist,) = ref.sampled_outcome_probs(base, drafts, q, torch.tensor([0, k]), temp)
    bins, nbins = _block_bins(V, hot, block)
    exp = torch.zeros((k + 1) * nbins, dtype=torch.float64)
    for a in range(k + 1):
        exp.index_add_(0, a * nbins + bins, dist[a] * N)
    cu = torch.arange(N + 1, device="cuda", dtype=torch.int32) * k
    acc, out = ops.verify_sampled(base.cuda().repeat(N, 1), drafts.cuda().repeat(N), q.cuda().repeat(N, 1), cu,
                                  temp, seed=13, max_num_draft=k, out=_poison(N, k + 1))
    acc, out = acc.long(), out.long()
    assert torch.all((acc >= 0) & (acc <= k))
    emitted = out.gather(1, acc.view(-1, 1)).view(-1)
    assert torch.all((emitted >= 0) & (emitted < V))
    obs = torch.bincount((acc * nbins + bins.cuda()[emitted]).cpu(), minlength=(k + 1) * nbins)
    assert_counts_follow(obs, exp, N)
