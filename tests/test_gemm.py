"""Dense GEMMs (FP8 block-scaled and BF16): reference math, compile for sm_90a, heuristics and
validation on the CPU; correctness against float64 on a Hopper GPU (`-m gpu`).

Error bounds (relative Frobenius norm vs float64 of the dequantised inputs):
  * bf16 output: 2e-3; on outputs under 4096 elements, the bf16 rounding of the exact result itself
    + 5e-4 where that is larger (`reference.gemm.bf16_output_bound`). Rounding alone gives ~1.66e-3 on average for random data
    but spreads to ~2.4e-3 on a 64-element output (seen on the GPU: M=1, N=64, K=128 at 2.03e-3).
  * fp32 output (c given): 5e-4. What remains is fp32 accumulation over K and the tensor cores'
    reduced-precision fp8 accumulation inside one 128-wide K block (~2^-14 relative per block).
"""
import os
import random

import pytest
import torch
from hypothesis import given, settings, strategies as st

from jitkern import heuristics
from jitkern.reference import gemm as ref
from jitkern.reference.quant import quant_block, quant_token_group
from sass_tools import sass_of

V3_NK = [(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048), (576, 7168)]


def quantize(x_rows, w, scale_a=1.0, scale_b=1.0):
    """bf16/fp32 activations [M, K] and weights [N, K] -> ((A, sa), (B, sb)) in plain torch."""
    qa, sa = quant_token_group(x_rows * scale_a)
    qb, sb = quant_block(w * scale_b)
    return (qa, sa), (qb, sb)


# ----------------------------------------------------------------------------- CPU: reference

def test_reference_matches_naive_loop():
    torch.manual_seed(0)
    m, n, k = 5, 136, 272
    (qa, sa), (qb, sb) = quantize(torch.randn(m, k), torch.randn(n, k))
    d = ref.gemm_fp8_nt_ref((qa, sa), (qb, sb))
    i, j = 3, 130
    want = sum(float(qa[i, t]) * float(sa[i, t // 128]) * float(qb[j, t]) * float(sb[j // 128, t // 128])
               for t in range(k))
    assert abs(d[i, j].item() - want) <= 1e-9 * max(1.0, abs(want))
    c = torch.randn(m, n)
    assert torch.allclose(ref.gemm_fp8_nt_ref((qa, sa), (qb, sb), c), d + c.double())


def test_bf16_output_bound():
    g = torch.Generator().manual_seed(1)
    big = torch.randn(256, 256, generator=g, dtype=torch.float64) * 10
    assert ref.bf16_output_bound(big) == 2e-3  # rounding concentrates at ~1.66e-3 on a large output
    assert ref.rel_err(big.bfloat16(), big) < 1.75e-3
    small = torch.randn(1, 64, generator=g, dtype=torch.float64) * 10
    bound = ref.bf16_output_bound(small)
    assert 2e-3 <= bound <= ref.rel_err(small.bfloat16(), small) + 5e-4 + 1e-12
    assert ref.rel_err(small.bfloat16(), small) <= bound  # a correctly rounded result passes
    assert ref.rel_err((small * 1.004).bfloat16(), small) > bound  # a 0.4% error does not


def test_rel_err_flags_nan():
    r = torch.ones(4, 4)
    x = r.clone()
    x[1, 1] = float("nan")
    assert ref.rel_err(x, r) == float("inf")
    assert ref.rel_err(r, r) == 0.0


# ----------------------------------------------------------------------------- CPU: heuristics

@pytest.mark.parametrize("kind", ["fp8", "bf16"])
@pytest.mark.parametrize("m", [1, 64, 65, 128, 300, 4096, 8192])
@pytest.mark.parametrize("n,k", V3_NK)
def test_heuristic_config_fits(kind, m, n, k):
    cfg = heuristics.gemm_config(kind, m, n, k, 132, "nominal H100 SXM")
    assert cfg.block_m in (64, 128, 256)
    assert cfg.block_n in heuristics.block_n_candidates(kind, cfg.block_m)
    assert cfg.stages >= 2
    assert heuristics.gemm_smem_bytes(kind, cfg.block_m, cfg.block_n, cfg.stages) <= heuristics.SMEM_LIMIT


def test_heuristic_prefers_fewer_waves():
    # M = 64, N = 2112: 128-wide tiles give 17 CTAs on 132 SMs; narrower tiles must be chosen.
    cfg = heuristics.heuristic_gemm_config("fp8", 64, 2112, 7168)
    assert -(-2112 // cfg.block_n) > 17


def test_heuristic_large_m_fp8_tiles():
    # 256x128 where waves quantise well, a 128-row tile where they do not (N = 2112: 272 tiles of
    # 256x128 = 2.06 waves; 384 tiles of 128x176 = 2.9 waves), as measured on H200
    assert heuristics.heuristic_gemm_config("fp8", 4096, 7168, 16384).label() == "256x128x3c11"
    cfg = heuristics.heuristic_gemm_config("fp8", 4096, 2112, 7168)
    assert cfg.block_m == 128 and cfg.block_n >= 176


def test_h200_falls_back_to_h100_entries(tmp_path, monkeypatch):
    import json
    (tmp_path / "gemm_h100.json").write_text(json.dumps({"entries": [
        {"kind": "fp8", "n": 64, "k": 128, "m_bucket": 64, "block_m": 64, "block_n": 32, "stages": 4},
        {"kind": "fp8", "n": 64, "k": 256, "m_bucket": 64, "block_m": 64, "block_n": 32, "stages": 4}]}))
    (tmp_path / "gemm_h200.json").write_text(json.dumps({"entries": [
        {"kind": "fp8", "n": 64, "k": 256, "m_bucket": 64, "block_m": 64, "block_n": 64, "stages": 3, "split_k": 2}]}))
    monkeypatch.setattr(heuristics, "tuning_dir", lambda: tmp_path)
    heuristics._tuned_table.cache_clear()
    try:
        assert heuristics.gemm_config("fp8", 64, 64, 128, gpu_name="NVIDIA H200").block_n == 32  # H100's
        own = heuristics.gemm_config("fp8", 64, 64, 256, gpu_name="NVIDIA H200")
        assert (own.block_n, own.split_k) == (64, 2)  # its own entry wins
        assert heuristics.gemm_config("fp8", 64, 64, 256, gpu_name="NVIDIA H100 80GB HBM3").block_n == 32
    finally:
        heuristics._tuned_table.cache_clear()


# ----------------------------------------------------------------------------- CPU: compile



COMPILE_CASES = [("fp8", 4096, 7168, 7168, None), ("fp8", 64, 2112, 7168, None), ("bf16", 4096, 7168, 2048, None),
                 ("fp8", 0, 7168, 2048, heuristics.GemmConfig(128, 144, 5, 16, 132, 2, 1)),
                 ("fp8", 0, 2112, 7168, heuristics.GemmConfig(64, 160, 8, 16, 132, 1, 2)),
                 ("bf16", 0, 2112, 7168, heuristics.GemmConfig(128, 256, 3, 16, 132, 2, 1)),
                 ("fp8", 0, 7168, 16384, heuristics.GemmConfig(256, 128, 3, 16, 132, 2, 1)),
                 ("fp8", 0, 4096, 7168, heuristics.GemmConfig(256, 96, 3, 16, 132, 1, 2)),
                 ("fp8", 0, 7168, 2048, heuristics.GemmConfig(128, 192, 4, 16, 132, 1, 1)),
                 ("fp8", 0, 2112, 7168, heuristics.GemmConfig(64, 64, 12, split_k=4)),
                 ("bf16", 0, 4096, 7168, heuristics.GemmConfig(128, 128, 6, split_k=2))]


@pytest.mark.parametrize("kind,m,n,k,cfg", COMPILE_CASES)
def test_compiles_for_sm90a_without_spills(kind, m, n, k, cfg, cache_dir):
    from jitkern.ops.gemm import gemm_spec
    from jitkern.runtime import compile_spec
    cfg = cfg or heuristics.gemm_config(kind, m, n, k, 132, "nominal H100 SXM")
    entry, status = compile_spec(gemm_spec(kind, n, k, cfg), "sm_90a")
    assert status == "compiled"
    p = entry.meta["ptxas"]
    assert p.get("spill_stores", 0) == 0 and p.get("spill_loads", 0) == 0 and p.get("stack_frame", 0) == 0, p
    assert p["wgmma_serialized"] is False, p  # ptxas C7511: every wgmma waits for the previous one


@pytest.mark.parametrize("kind,m,n,k,cfg", COMPILE_CASES)
def test_sass_has_tensor_core_mma_and_no_local_memory(kind, m, n, k, cfg, cache_dir):
    # issue 3: the fp8 path must run on QGMMA (fp8 e4m3 wgmma), bf16 on HGMMA; no LDL/STL anywhere
    from jitkern.ops.gemm import gemm_spec
    from jitkern.runtime import compile_spec
    cfg = cfg or heuristics.gemm_config(kind, m, n, k, 132, "nominal H100 SXM")
    sass = sass_of(compile_spec(gemm_spec(kind, n, k, cfg), "sm_90a")[0].cubin)
    assert ("QGMMA" if kind == "fp8" else "HGMMA") in sass
    assert "LDL" not in sass and "STL" not in sass


# ----------------------------------------------------------------------------- CPU: validation

def test_tuned_configs_compile_pipelined(cache_dir):
    # Every config a tuning table can hand out keeps its wgmma pipelined once compile_spec has
    # applied the spec's fallback (gemm.cuh JITKERN_GEMM_RUNTIME_J; NVRTC 13.0 serialises the
    # constant-trip-count promotion loop at K = 512, which two H200 entries use).
    import json
    from jitkern.ops.gemm import gemm_spec
    from jitkern.runtime import compile_spec
    seen = set()
    for path in sorted(heuristics.tuning_dir().glob("gemm_*.json")):
        data = json.loads(path.read_text())
        for e in data["entries"] if isinstance(data, dict) else data:
            cfg = heuristics.GemmConfig(int(e["block_m"]), int(e["block_n"]), int(e["stages"]), int(e.get("group_n", 16)),
                                        132, int(e.get("cluster_m", 1)), int(e.get("cluster_n", 1)), int(e.get("split_k", 1)))
            key = (e["kind"], int(e["n"]), int(e["k"]), cfg)
            if key in seen:
                continue
            seen.add(key)
            entry, _ = compile_spec(gemm_spec(e["kind"], int(e["n"]), int(e["k"]), cfg), "sm_90a")
            assert entry.meta["ptxas"]["wgmma_serialized"] is False, (path.name, key)
    assert len(seen) >= 30


def test_validation_names_arguments():
    from jitkern.ops.gemm import gemm_bf16_nt, gemm_fp8_nt
    a = torch.zeros(4, 128, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="^a:"):
        gemm_bf16_nt(a.float(), a)
    with pytest.raises(ValueError, match="^b:"):
        gemm_fp8_nt((torch.zeros(4, 128, dtype=torch.float8_e4m3fn), torch.ones(4, 1)), a)
    with pytest.raises(ValueError, match="^a:"):
        gemm_fp8_nt(a, (a, a))
    q = torch.zeros(4, 128, dtype=torch.float8_e4m3fn)
    with pytest.raises(ValueError, match=r"^a\[0\]"):
        gemm_fp8_nt((q.float(), torch.ones(4, 1)), (q, torch.ones(1, 1)))


# ----------------------------------------------------------------------------- GPU

def _fp8_inputs(m, n, k, dev, scale_a=1.0, scale_b=1.0, gen=None):
    x = torch.randn(m, k, device=dev, generator=gen)
    w = torch.randn(n, k, device=dev, generator=gen)
    (qa, sa), (qb, sb) = quantize(x, w, scale_a, scale_b)
    # the kernel's preferred A-scale layout: MN-major, TMA-aligned columns
    from jitkern.ops.gemm import _sfa_mn_major
    return (qa, _sfa_mn_major(sa, m, sa.shape[1])), (qb, sb)


def _check_fp8(m, n, k, seed, scale_a=1.0, scale_b=1.0, accum=False, raw_sa=False, config=None):
    from jitkern.ops.gemm import gemm_fp8_nt
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(seed)
    a, b = _fp8_inputs(m, n, k, dev, scale_a, scale_b, g)
    if raw_sa:
        a = (a[0], a[1].contiguous())  # row-major scales: the op must relayout them
    c = torch.randn(m, n, device=dev, generator=g) if accum else None
    out = torch.full((m, n), float("nan"), device=dev, dtype=torch.float32 if accum else torch.bfloat16)
    got = gemm_fp8_nt(a, b, out=out, c=c, config=config)
    assert got.data_ptr() == out.data_ptr()
    want = ref.gemm_fp8_nt_ref(a, b, c)
    err = ref.rel_err(got, want)
    assert err <= (5e-4 if accum else ref.bf16_output_bound(want)), (m, n, k, err)


def _check_bf16(m, n, k, seed, accum=False, config=None):
    from jitkern.ops.gemm import gemm_bf16_nt
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(seed)
    a = torch.randn(m, k, device=dev, generator=g).bfloat16()
    b = torch.randn(n, k, device=dev, generator=g).bfloat16()
    c = torch.randn(m, n, device=dev, generator=g) if accum else None
    out = torch.full((m, n), float("nan"), device=dev, dtype=torch.float32 if accum else torch.bfloat16)
    got = gemm_bf16_nt(a, b, out=out, c=c, config=config)
    want = ref.gemm_bf16_nt_ref(a, b, c)
    err = ref.rel_err(got, want)
    assert err <= (5e-4 if accum else ref.bf16_output_bound(want)), (m, n, k, err)


def _nk():
    return st.one_of(st.sampled_from(V3_NK),
                     st.tuples(st.integers(1, 48).map(lambda x: 64 * x), st.integers(1, 40).map(lambda x: 128 * x)))


@pytest.mark.gpu
@settings(max_examples=int(os.environ.get("GEMM_EXAMPLES", "25")))
@given(m=st.integers(1, 8192), nk=_nk(), seed=st.integers(0, 2**31 - 1))
def test_fp8_gemm_hypothesis(m, nk, seed):
    n, k = nk
    if m * n * k > 4096 * 7168 * 7168:  # keep the float64 reference affordable
        m = max(1, 4096 * 7168 * 7168 // (n * k))
    _check_fp8(m, n, k, seed)


@pytest.mark.gpu
@settings(max_examples=int(os.environ.get("GEMM_EXAMPLES", "25")))
@given(m=st.integers(1, 8192), nk=_nk(), seed=st.integers(0, 2**31 - 1))
def test_bf16_gemm_hypothesis(m, nk, seed):
    n, k = nk
    if m * n * k > 4096 * 7168 * 7168:
        m = max(1, 4096 * 7168 * 7168 // (n * k))
    _check_bf16(m, n, k, seed)


@pytest.mark.gpu
@pytest.mark.parametrize("m,n,k", [(1, 2112, 7168), (64, 576, 7168), (129, 7168, 2048), (300, 4104, 1552),
                                   (77, 136, 16)])
def test_fp8_edges(m, n, k):
    _check_fp8(m, n, k, random.randrange(1 << 30))


@pytest.mark.gpu
@pytest.mark.parametrize("scale_a,scale_b", [(1e4, 1e-4), (1e-6, 1e-6), (300.0, 1e3)])
def test_fp8_extreme_scales(scale_a, scale_b):
    _check_fp8(200, 2112, 1536, random.randrange(1 << 30), scale_a, scale_b)


@pytest.mark.gpu
@pytest.mark.parametrize("m,n,k", [(33, 576, 512), (1000, 2112, 7168)])
def test_fp8_accumulate_fp32(m, n, k):
    _check_fp8(m, n, k, random.randrange(1 << 30), accum=True)


CLUSTER_CFGS = [heuristics.GemmConfig(128, 128, 5, 16, 132, 2, 1), heuristics.GemmConfig(128, 112, 5, 4, 132, 2, 1),
                heuristics.GemmConfig(64, 96, 8, 16, 132, 1, 2), heuristics.GemmConfig(128, 48, 6, 3, 132, 1, 2),
                heuristics.GemmConfig(64, 16, 8, 16, 8, 1, 1)]


@pytest.mark.gpu
@pytest.mark.parametrize("cfg", CLUSTER_CFGS, ids=lambda c: f"{c.block_m}x{c.block_n}c{c.cluster_m}{c.cluster_n}g{c.group_n}s{c.num_sms}")
@pytest.mark.parametrize("m,n,k", [(300, 2112, 1536), (129, 576, 7168), (1000, 7168, 512)])
def test_configs_and_clusters(cfg, m, n, k):
    # odd block counts: the spare CTA of a pair must load its half and store nothing
    _check_fp8(m, n, k, random.randrange(1 << 30), config=cfg)
    bcfg = heuristics.GemmConfig(cfg.block_m, cfg.block_n, 3, cfg.group_n, cfg.num_sms, cfg.cluster_m, cfg.cluster_n)
    _check_bf16(m, n, k, random.randrange(1 << 30), config=bcfg)


# FP8-only tiles: BLOCK_M 256 (two 64-row waves per math warpgroup) and BLOCK_N past 128 (a tile
# spans two or three B-scale blocks, chosen per 8 columns at run time).
WIDE_FP8_CFGS = [heuristics.GemmConfig(256, 128, 3, 16, 132, 1, 1), heuristics.GemmConfig(256, 128, 3, 16, 132, 2, 1),
                 heuristics.GemmConfig(256, 96, 3, 4, 132, 1, 2), heuristics.GemmConfig(256, 112, 3, 16, 10, 1, 1),
                 heuristics.GemmConfig(128, 192, 4, 16, 132, 1, 1), heuristics.GemmConfig(128, 160, 4, 16, 132, 2, 1),
                 heuristics.GemmConfig(128, 176, 4, 3, 12, 1, 2)]


@pytest.mark.gpu
@pytest.mark.parametrize("cfg", WIDE_FP8_CFGS, ids=lambda c: f"{c.block_m}x{c.block_n}c{c.cluster_m}{c.cluster_n}g{c.group_n}s{c.num_sms}")
@pytest.mark.parametrize("m,n,k", [(300, 2112, 1536), (129, 576, 7168), (1000, 7168, 512), (513, 4096, 7168)])
def test_wide_fp8_tiles(cfg, m, n, k):
    # M not a multiple of 256 (a partial second wave), N not a multiple of BLOCK_N, odd cluster tails
    _check_fp8(m, n, k, random.randrange(1 << 30), config=cfg)


@pytest.mark.gpu
@pytest.mark.parametrize("cfg", WIDE_FP8_CFGS[:2] + WIDE_FP8_CFGS[4:5], ids=lambda c: f"{c.block_m}x{c.block_n}c{c.cluster_m}{c.cluster_n}")
def test_wide_fp8_tiles_accumulate(cfg):
    _check_fp8(300, 2112, 1536, random.randrange(1 << 30), accum=True, config=cfg)


def test_explicit_tile_is_validated():
    from jitkern.ops.gemm import _check_tile
    for kind, cfg in (("fp8", heuristics.GemmConfig(96, 128, 4)), ("fp8", heuristics.GemmConfig(192, 128, 4)),
                      ("fp8", heuristics.GemmConfig(128, 200, 4)), ("fp8", heuristics.GemmConfig(256, 144, 3)),
                      ("bf16", heuristics.GemmConfig(256, 128, 3)), ("bf16", heuristics.GemmConfig(64, 8, 4))):
        with pytest.raises(ValueError, match="^config: "):
            _check_tile(kind, cfg)
    _check_tile("bf16", heuristics.GemmConfig(128, 256, 3))
    _check_tile("fp8", heuristics.GemmConfig(256, 128, 3))


# Split-K: several CTAs per output tile over slices of K, fp32 partials reduced by the last CTA.
SPLIT_CFGS = [heuristics.GemmConfig(64, 64, 12, split_k=4), heuristics.GemmConfig(128, 64, 8, split_k=2),
              heuristics.GemmConfig(64, 32, 12, split_k=3), heuristics.GemmConfig(128, 128, 6, split_k=8),
              heuristics.GemmConfig(64, 48, 12, 16, 8, split_k=6)]


@pytest.mark.gpu
@pytest.mark.parametrize("cfg", SPLIT_CFGS, ids=lambda c: c.label())
@pytest.mark.parametrize("m,n,k", [(64, 2112, 7168), (77, 576, 7168), (130, 4104, 1552)])
def test_split_k(cfg, m, n, k):
    from jitkern.ops.gemm import gemm_fp8_nt
    _check_fp8(m, n, k, random.randrange(1 << 30), config=cfg)
    _check_fp8(m, n, k, random.randrange(1 << 30), accum=True, config=cfg)
    _check_bf16(m, n, k, random.randrange(1 << 30), config=cfg)
    # the partials are summed in split order and the tile counters reset: same bits every call
    a, b = _fp8_inputs(m, n, k, "cuda")
    first = gemm_fp8_nt(a, b, config=cfg)
    again = torch.full_like(first, float("nan"))
    for _ in range(3):
        gemm_fp8_nt(a, b, out=again, config=cfg)
    assert torch.equal(first, again)


@pytest.mark.gpu
def test_split_k_graph_replay_and_config_errors():
    from jitkern.ops.gemm import gemm_fp8_nt
    cfg = heuristics.GemmConfig(64, 64, 12, split_k=4)
    a, b = _fp8_inputs(96, 2112, 7168, "cuda")
    out = torch.empty(96, 2112, device="cuda", dtype=torch.bfloat16)
    gemm_fp8_nt(a, b, out=out, config=cfg)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s), torch.cuda.graph(g, stream=s):
        gemm_fp8_nt(a, b, out=out, config=cfg)
    want = ref.gemm_fp8_nt_ref(a, b)
    for _ in range(2):
        out.fill_(float("nan"))
        g.replay()
        torch.cuda.synchronize()
        assert ref.rel_err(out, want) <= ref.bf16_output_bound(want)
    with pytest.raises(ValueError, match="^config"):
        gemm_fp8_nt(a, b, config=heuristics.GemmConfig(64, 64, 12, 16, 132, 2, 1, split_k=2))
    with pytest.raises(ValueError, match="^config: split_k must be in"):
        gemm_fp8_nt(a, b, config=heuristics.GemmConfig(64, 64, 12, split_k=57))  # K = 7168: 56 blocks
    with pytest.raises(ValueError, match="^config: BLOCK_M must be"):  # not a failed static_assert
        gemm_fp8_nt(a, b, config=heuristics.GemmConfig(192, 128, 4))


@pytest.mark.gpu
def test_fp8_row_major_scales_are_relaid():
    _check_fp8(130, 1024, 1024, random.randrange(1 << 30), raw_sa=True)


@pytest.mark.gpu
@pytest.mark.parametrize("m,n,k", [(1, 2112, 7168), (100, 576, 72), (257, 4096, 7168)])
def test_bf16_edges_and_accumulate(m, n, k):
    _check_bf16(m, n, k, random.randrange(1 << 30))
    _check_bf16(m, n, k, random.randrange(1 << 30), accum=True)


@pytest.mark.gpu
def test_m_zero_launches_nothing():
    from jitkern.ops.gemm import gemm_bf16_nt, gemm_fp8_nt
    a, b = _fp8_inputs(0, 256, 256, "cuda")
    assert gemm_fp8_nt(a, b).shape == (0, 256)
    assert gemm_bf16_nt(torch.empty(0, 64, device="cuda", dtype=torch.bfloat16),
                        torch.randn(64, 64, device="cuda").bfloat16()).shape == (0, 64)


@pytest.mark.gpu
def test_gpu_validation_errors():
    from jitkern.ops.gemm import gemm_fp8_nt
    a, b = _fp8_inputs(64, 256, 256, "cuda")
    with pytest.raises(ValueError, match=r"^b\[0\]"):
        gemm_fp8_nt(a, (b[0][:, :128], b[1]))
    with pytest.raises(ValueError, match=r"^b\[1\]"):
        gemm_fp8_nt(a, (b[0], b[1][:1]))
    with pytest.raises(ValueError, match="^out"):
        gemm_fp8_nt(a, b, out=torch.empty(64, 256, device="cuda"))
    with pytest.raises(ValueError, match=r"^b\[0\]"):
        gemm_fp8_nt(a, (b[0][:100], b[1]))  # N = 100 is not a multiple of 8


@pytest.mark.gpu
def test_cuda_graph_capture():
    from jitkern.ops.gemm import gemm_fp8_nt
    a, b = _fp8_inputs(256, 2112, 7168, "cuda")
    out = torch.empty(256, 2112, device="cuda", dtype=torch.bfloat16)
    gemm_fp8_nt(a, b, out=out)
    torch.cuda.synchronize()
    out.fill_(float("nan"))
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s), torch.cuda.graph(g, stream=s):
        gemm_fp8_nt(a, b, out=out)
    g.replay()
    torch.cuda.synchronize()
    want = ref.gemm_fp8_nt_ref(a, b)
    assert ref.rel_err(out, want) <= ref.bf16_output_bound(want)


def test_hopper_helpers_compile(cache_dir):
    """Every helper in templates/common/hopper.cuh assembles for sm_90a (smoke kernel)."""
    from jitkern.runtime import KernelSpec, compile_spec
    entry, status = compile_spec(KernelSpec("gemm/hopper_smoke.cuh", "jitkern::hopper_smoke", family="gemm"), "sm_90a")
    assert status == "compiled" and entry.cubin


def test_wgmma_header_is_generated():
    """templates/common/wgmma.cuh is scripts/gen_wgmma.py's output, byte for byte."""
    import importlib.util
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("gen_wgmma", root / "scripts" / "gen_wgmma.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (root / "templates" / "common" / "wgmma.cuh").read_text() == gen.generate()
