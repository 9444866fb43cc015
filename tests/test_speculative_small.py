"""Small speculative-verification cases, cheap enough to run under compute-sanitizer
(memcheck / racecheck): every kernel path once, against the reference."""
import pytest
import torch

from jitkern.ops import speculative as ops
from jitkern.reference import speculative as ref

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("V", [3, 4100, 129280])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("kern", ["stream", "split"])
def test_small_greedy(V, dtype, kern, monkeypatch):
    monkeypatch.setattr(ops, "GREEDY_KERNEL", kern)
    g = torch.Generator(device="cuda").manual_seed(V)
    ks = [2, 0, 5]
    cu = torch.tensor([0, 2, 2, 7], dtype=torch.int32, device="cuda")
    logits = torch.randn(sum(ks) + 3, V, device="cuda", generator=g).to(dtype)
    drafts = logits.argmax(-1)[[0, 1, 4, 5, 6, 7, 8]]
    drafts[3] = (drafts[3] + 1) % V
    acc, out = ops.verify_greedy(logits, drafts, cu, max_num_draft=5)
    racc, rout = ref.verify_greedy(logits, drafts, cu, max_num_draft=5)
    assert torch.equal(acc.cpu(), racc) and torch.equal(out.cpu(), rout)
    if V > 4:  # unaligned rows: scalar path
        big = torch.zeros(logits.shape[0], V + 1, dtype=dtype, device="cuda")
        big[:, :V] = logits
        acc, out = ops.verify_greedy(big[:, :V], drafts, cu, max_num_draft=5)
        assert torch.equal(acc.cpu(), racc) and torch.equal(out.cpu(), rout)


@pytest.mark.parametrize("V", [3, 4100, 129280])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("temp", [0.0, 0.8])
def test_small_sampled(V, dtype, temp):
    g = torch.Generator(device="cuda").manual_seed(V)
    ks = [2, 0, 5]
    cu = torch.tensor([0, 2, 2, 7], dtype=torch.int32, device="cuda")
    logits = torch.randn(sum(ks) + 3, V, device="cuda", generator=g).to(dtype)
    q = torch.softmax(torch.randn(sum(ks), V, device="cuda", generator=g), -1)
    drafts = torch.multinomial(q, 1, generator=g).view(-1)
    acc, out = ops.verify_sampled(logits, drafts, q, cu, temp, seed=3, max_num_draft=5)
    dists = ref.sampled_outcome_probs(logits, drafts, q, cu, temp)
    for i, k in enumerate(ks):
        a = int(acc[i])
        assert 0 <= a <= k and dists[i][a, int(out[i, a])] > 0
    if V > 4:
        big = torch.zeros(logits.shape[0], V + 1, dtype=dtype, device="cuda")
        big[:, :V] = logits
        acc2, out2 = ops.verify_sampled(big[:, :V], drafts, q, cu, temp, seed=3, max_num_draft=5)
        assert torch.equal(acc, acc2) and torch.equal(out, out2)


def test_small_select():
    c = torch.randn(5, 9, device="cuda")
    assert torch.equal(ops.select_draft_length(c, 0.4).cpu(), ref.select_draft_length(c, 0.4).cpu())


def test_small_tree_greedy():
    V = 4100
    logits = torch.randn(9, V, device="cuda")
    am = logits.argmax(-1).tolist()
    # request 0: root(0) -> 1, 2 ; 1 -> 3 ; request 1: a lone root; request 2: root -> 1 -> 2 -> 3
    par = torch.tensor([-1, 0, 0, 1, -1, -1, 0, 1, 2], dtype=torch.int32, device="cuda")
    toks = torch.tensor([0, am[0], am[0], am[1], 0, 0, am[5], am[6], (am[7] + 1) % V], device="cuda")
    cu = torch.tensor([0, 4, 5, 9], dtype=torch.int32, device="cuda")
    acc, out, path = ops.verify_tree_greedy(logits, toks, par, cu, max_depth=4)
    racc, rout, rpath = ref.verify_tree_greedy(logits, toks, par, cu, max_depth=4)
    assert torch.equal(acc.cpu(), racc) and torch.equal(out.cpu(), rout) and torch.equal(path.cpu(), rpath)
    assert racc.tolist() == [2, 0, 2]


@pytest.mark.parametrize("temp", [0.0, 1.0])
def test_small_markov(temp):
    g = torch.Generator(device="cuda").manual_seed(1)
    b, k, V, r = 3, 4, 4100, 64
    base = torch.randint(-3, 4, (b, k, V), device="cuda", generator=g).float()
    w_in = torch.randint(-2, 3, (V, r), device="cuda", generator=g).to(torch.bfloat16)
    w_out = torch.randint(-2, 3, (V, r), device="cuda", generator=g).to(torch.bfloat16)
    prev = torch.tensor([0, 5, V - 1], device="cuda")
    got = ops.markov_draft(base, prev, w_in, w_out, temp, seed=2)
    assert got.shape == (b, k) and torch.all((got >= 0) & (got < V))
    if temp == 0.0:
        assert torch.equal(got, ref.markov_draft_greedy(base, prev, w_in, w_out))


@pytest.mark.parametrize("V", [3, 4100, 129280])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("top_k,top_p", [(5, None), (None, 0.7), (2, 0.5)])
def test_small_sampled_filtered(V, dtype, top_k, top_p):
    g = torch.Generator(device="cuda").manual_seed(V + 1)
    ks = [2, 0, 5]
    cu = torch.tensor([0, 2, 2, 7], dtype=torch.int32, device="cuda")
    logits = (torch.randn(sum(ks) + 3, V, device="cuda", generator=g) * 3).to(dtype)
    q = torch.softmax(torch.randn(sum(ks), V, device="cuda", generator=g), -1)
    drafts = torch.multinomial(q, 1, generator=g).view(-1)
    tk = torch.tensor([top_k or 0, 1, V], dtype=torch.int32, device="cuda")
    acc, out = ops.verify_sampled(logits, drafts, q, cu, 0.8, tk, top_p, seed=3, max_num_draft=5)
    dists = ref.sampled_outcome_probs(logits, drafts, q, cu, 0.8, tk.cpu(), top_p)
    for i, k in enumerate(ks):
        a = int(acc[i])
        assert 0 <= a <= k and dists[i][a, int(out[i, a])] > 0


@pytest.mark.parametrize("V", [5, 4100])
@pytest.mark.parametrize("top_k", [None, 3])
def test_small_tree_sampled(V, top_k):
    g = torch.Generator(device="cuda").manual_seed(V)
    logits = torch.randn(9, V, device="cuda", generator=g)
    q = torch.softmax(torch.randn(9, V, device="cuda", generator=g), -1)
    par = torch.tensor([-1, 0, 0, 1, -1, -1, 0, 1, 2], dtype=torch.int32, device="cuda")
    toks = torch.multinomial(q, 1, generator=g).view(-1)
    cu = torch.tensor([0, 4, 5, 9], dtype=torch.int32, device="cuda")
    acc, out, path = ops.verify_tree_sampled(logits, toks, par, q, cu, 0.9, top_k, seed=5, max_depth=4)
    dists = ref.tree_sampled_outcome_probs(logits, toks, par, q, cu, 0.9, top_k)
    for i in range(3):
        a = int(acc[i])
        assert a >= 0 and dists[i].get((tuple(path[i, :a + 1].tolist()), int(out[i, a])), 0) > 0
