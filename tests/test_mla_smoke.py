"""MLA decode smoke case, also runnable as a script (``python tests/test_mla_smoke.py``) for
compute-sanitizer: small, deterministic, covers a split request, an empty one and causal s_q > 1."""
import sys

import pytest
import torch

from jitkern.ops.mla import IMPLS, NARROW_ROWS_IMPLS


def run_case(lens=(300, 0, 65, 1000), s_q=2, h_q=32, seed=0, impl="wgmma"):
    from jitkern.ops import mla
    from jitkern.reference import mla as ref
    g = torch.Generator().manual_seed(seed)
    b = len(lens)
    need = [max(-(-L // 64), 1) for L in lens]
    perm = torch.randperm(sum(need), generator=g)
    bt = torch.zeros(b, max(need), dtype=torch.int32)
    o = 0
    for i, n in enumerate(need):
        bt[i, :n] = perm[o:o + n].to(torch.int32)
        o += n
    kv = torch.randn(sum(need), 64, 1, 576, generator=g).to(torch.bfloat16).cuda()
    q = torch.randn(b, s_q, h_q, 576, generator=g).to(torch.bfloat16).cuda()
    bt, sl = bt.cuda(), torch.tensor(lens, dtype=torch.int32, device="cuda")
    md = mla.mla_metadata(sl, s_q, h_q, num_parts=5)
    out, lse = mla.mla_decode(q, kv, bt, sl, md, impl=impl)
    ro, rl = ref.mla_decode_ref(q, kv, bt, sl)
    torch.cuda.synchronize()
    err = ((out.float() - ro).norm() / ro.norm()).item()
    fin = torch.isfinite(rl)
    lerr = (lse[fin] - rl[fin]).abs().max().item()
    same_inf = torch.equal(torch.isinf(lse), torch.isinf(rl))
    return err, lerr, same_inf, bool(torch.isnan(out).any() or torch.isnan(lse).any())


@pytest.mark.gpu
@pytest.mark.parametrize("impl", IMPLS)
def test_smoke(impl):
    # the transposed-tile impls take at most 32 query rows per request: 16 heads x 2 tokens
    err, lerr, same_inf, nan = run_case(impl=impl, h_q=16 if impl in NARROW_ROWS_IMPLS else 32)
    assert not nan and same_inf and err <= 5e-3 and lerr <= 1e-3, (err, lerr, same_inf, nan)


if __name__ == "__main__":
    ok = True
    for impl in (sys.argv[1:] or ["simt", "wgmma"]):
        r = run_case(impl=impl, h_q=16 if impl in NARROW_ROWS_IMPLS else 32)
        good = not r[3] and r[2] and r[0] <= 5e-3 and r[1] <= 1e-3
        print("smoke %s rel_err=%.3e lse_err=%.3e same_inf=%s nan=%s %s" % ((impl,) + r + ("OK" if good else "FAIL",)))
        ok = ok and good
    sys.exit(0 if ok else 1)
