"""Small speculative-verification cases, cheap enough to run under compute-sanitizer
(memcheck / racecheck): every kernel path once, against the reference."""
import pytest
import torch

from jitkern.ops import speculative as ops
from jitkern.reference import speculative as ref

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("V", [3, 4100, 129280])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_small_greedy(V, dtype):
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
