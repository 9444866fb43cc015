"""Test helper: Pearson chi-square checks for the sampling kernels (exact distributions known)."""
import torch


def chi2_sf(stat, df):
    """Survival function of the chi-square distribution (regularised upper gamma)."""
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


def chi2_pvalue(obs, exp):
    """Pearson chi-square (p-value, statistic, df); cells with expected count < 5 pooled."""
    obs, exp = obs.double(), exp.double()
    small = exp < 5
    o = torch.cat([obs[~small], obs[small].sum().view(1)]) if small.any() else obs
    e = torch.cat([exp[~small], exp[small].sum().view(1)]) if small.any() else exp
    keep = e > 0
    o, e = o[keep], e[keep]
    stat = float(((o - e) ** 2 / e).sum())
    df = o.numel() - 1
    return chi2_sf(stat, df), stat, df


def assert_detects_1pct_bias(exp):
    """The test has power: with a 1% relative bias on the most likely outcome, the expected
    statistic (df + noncentrality) would fail the p > 1e-3 check."""
    biased = exp.clone().double()
    top = int(torch.argmax(exp))
    shift = 0.01 * biased[top]
    rest = torch.ones_like(biased, dtype=torch.bool)
    rest[top] = False
    biased[top] += shift
    biased[rest] -= shift * exp[rest] / exp[rest].sum()
    _, lam, df = chi2_pvalue(biased, exp)
    assert chi2_sf(df + lam, df) < 1e-3, (lam, df)


def assert_counts_follow(obs, exp, n):
    """Histogram `obs` of `n` draws follows the expected counts `exp`: no zero-probability cell
    drawn, a certain outcome always drawn, else chi-square p > 1e-3 with power for a 1% bias."""
    assert torch.all(obs[exp == 0] == 0), "a zero-probability outcome was emitted"
    if int((exp > 0).sum()) == 1:  # the outcome is certain (temperature 0, top_k = 1)
        assert int(obs[exp > 0]) == n
        return
    pval, stat, df = chi2_pvalue(obs, exp)
    assert pval > 1e-3, (pval, stat, df)
    assert_detects_1pct_bias(exp)
