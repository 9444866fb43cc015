"""Shape -> kernel configuration for the GEMM family.

A tuned table (``tuning/gemm_<gpu>.json``, written by ``jitkern bench gemm --tune``) wins when it
has an entry for (kind, N, K) and the M bucket; otherwise a wave-quantisation model picks the
block sizes (DeepGEMM's approach: fewest waves of tiles over the SMs, then the fullest last wave,
then the larger tile), and the stage count fills shared memory.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

SMEM_LIMIT = 232448  # H100 opt-in dynamic shared memory per block
_PKG = Path(__file__).resolve().parent


def tuning_dir() -> Path:
    """``jitkern/tuning`` in an installed wheel, ``<repo>/tuning`` in a source checkout."""
    for cand in (_PKG / "tuning", _PKG.parent / "tuning"):
        if cand.is_dir():
            return cand
    return _PKG.parent / "tuning"


@dataclasses.dataclass(frozen=True)
class GemmConfig:
    block_m: int
    block_n: int
    stages: int
    group_n: int = 16
    num_sms: int = 132   # persistent grid size cap
    cluster_m: int = 1   # 2: CTA pairs along M share (multicast) the B tile
    cluster_n: int = 1   # 2: CTA pairs along N share (multicast) the A tile
    split_k: int = 1     # > 1: that many CTAs per output tile, each over a slice of K (dense, no cluster)

    def as_dict(self):
        return dataclasses.asdict(self)

    def label(self) -> str:
        """Short name for tables: ``BMxBNxSTAGES`` + ``cMN`` (cluster) + ``sS`` (split-K, if any)."""
        return (f"{self.block_m}x{self.block_n}x{self.stages}c{self.cluster_m}{self.cluster_n}"
                + (f"s{self.split_k}" if self.split_k > 1 else ""))


def gemm_block_k(kind: str) -> int:
    return 128 if kind == "fp8" else 64


def gemm_stage_bytes(kind: str, block_m: int, block_n: int) -> int:
    return block_m * 128 + block_n * 128 + (block_m * 4 if kind == "fp8" else 0)


def gemm_out_bytes(block_m: int, block_n: int, accum: bool = False) -> int:
    # bf16 output is staged in smem for the TMA store; the fp32 accumulate path (and split-K, and
    # the masked layout: pass accum=True for those) stores directly
    return 0 if accum else block_m * block_n * 2


def gemm_max_stages(kind: str, block_m: int, block_n: int, smem_limit: int = SMEM_LIMIT, accum: bool = False) -> int:
    per = gemm_stage_bytes(kind, block_m, block_n) + 16
    return max(1, min(12, (smem_limit - 1024 - gemm_out_bytes(block_m, block_n, accum)) // per))


def gemm_smem_bytes(kind: str, block_m: int, block_n: int, stages: int, accum: bool = False) -> int:
    return 1024 + stages * gemm_stage_bytes(kind, block_m, block_n) + gemm_out_bytes(block_m, block_n, accum) + 16 * stages


def block_n_candidates(kind: str, block_m: int = 64) -> list[int]:
    """BLOCK_N values the GEMM kernel compiles spill-free for ``kind`` and ``block_m``.

    fp8 keeps the wgmma accumulator plus the promoted fp32 sum (BLOCK_M 256: one accumulator, two
    promoted 64-row waves), so register room bounds BLOCK_N: 160 (BLOCK_M 64, 240 registers),
    192 (128, 224 registers), 128 (256). BLOCK_M 256 is fp8-only (gemm.cuh)."""
    if kind == "fp8":
        top = {64: 160, 128: 192, 256: 128}[block_m]
    else:
        if block_m == 256:
            return []
        top = 256
    return list(range(16, top + 1, 16))


def m_bucket(m: int) -> int:
    """Tuning-table bucket of M: the next power of two, at least 64, at most 4096."""
    b = 64
    while b < m and b < 4096:
        b *= 2
    return b


def gpu_key(gpu_name: str) -> str:
    """Tuning-table key of a GPU name: ``h100``, ``h200``, else the name in lower snake case."""
    up = gpu_name.upper()
    for key in ("H100", "H200"):
        if key in up:
            return key.lower()
    return gpu_name.lower().replace(" ", "_")


# A GPU with no table of its own borrows one of the same chip: the H200 is an H100 (132 SMs, the
# same tensor cores and shared memory) with faster HBM.
_TABLE_FALLBACK = {"h200": "h100"}


def tuning_path(gpu_name: str) -> Path:
    """Where ``jitkern bench gemm --tune`` writes the table of ``gpu_name``."""
    return tuning_dir() / f"gemm_{gpu_key(gpu_name)}.json"


@functools.lru_cache(maxsize=None)
def _tuned_table(gpu_name: str) -> dict:
    key = gpu_key(gpu_name)
    # the same chip's entries first, this GPU's own entries override them
    table = dict(_tuned_table(gpu_key(_TABLE_FALLBACK[key]))) if key in _TABLE_FALLBACK else {}
    path = tuning_dir() / f"gemm_{key}.json"
    if not path.is_file():
        return table
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return table
    for e in doc.get("entries", []):
        try:
            table[(e["kind"], int(e["n"]), int(e["k"]), int(e["m_bucket"]))] = GemmConfig(
                int(e["block_m"]), int(e["block_n"]), int(e["stages"]), int(e.get("group_n", 16)), 132,
                int(e.get("cluster_m", 1)), int(e.get("cluster_n", 1)), int(e.get("split_k", 1)))
        except (KeyError, ValueError, TypeError):
            continue
    return table


# FP8 tiles for many output tiles (M > 256) and their throughput per wave slot relative to 256x128,
# measured on H200 (bench gemm --tune, same run, K 2048..16384): 128x128 0.90-0.93, 128x192 0.96.
_FP8_LARGE_M_TILES = {(256, 128): 1.0, (128, 192): 0.96, (128, 176): 0.94, (128, 128): 0.92}


def heuristic_gemm_config(kind: str, m: int, n: int, k: int, num_sms: int = 132,
                          smem_limit: int = SMEM_LIMIT) -> GemmConfig:
    """Model-only choice (no table)."""
    if kind == "fp8" and m > 256:
        # fewest wave slots weighted by tile area over measured efficiency (wave quantisation decides
        # between 256x128 and the 128-row tiles, e.g. N = 2112 takes 128x176)
        def cost(t):
            bm, bn = t
            waves = -(-(-(-m // bm) * -(-n // bn)) // num_sms)
            return waves * bm * bn / _FP8_LARGE_M_TILES[t]
        bm, bn = min(_FP8_LARGE_M_TILES, key=cost)
        return GemmConfig(bm, bn, gemm_max_stages(kind, bm, bn, smem_limit), 16, num_sms, 1, 1)
    block_m = 64 if m <= 64 else 128
    cands = block_n_candidates(kind, block_m)
    if m > 256:
        # Measured on H100 (tuning/gemm_h100.json): with many tiles, bf16 is fastest at
        # 128 x (176..256); narrower tiles lose to their extra A/B re-reads.
        cands = [c for c in cands if c >= 176]
    best = None
    for bn in cands:
        tiles = -(-m // block_m) * -(-n // bn)
        waves = -(-tiles // num_sms)
        last = tiles - (waves - 1) * num_sms
        key = (waves, -last / num_sms, -bn)
        if best is None or key < best[0]:
            best = (key, bn)
    bn = best[1]
    # 2-CTA clusters (TMA multicast) are supported but lost to 1x1 on every anchor shape when
    # tuned on H100 (2026-11-22), so the model does not pick them; a tuned entry may.
    return GemmConfig(block_m, bn, gemm_max_stages(kind, block_m, bn, smem_limit), 16, num_sms, 1, 1)


def gemm_config(kind: str, m: int, n: int, k: int, num_sms: int = 132, gpu_name: str = "",
                smem_limit: int = SMEM_LIMIT) -> GemmConfig:
    """Config for ``kind`` ("fp8" | "bf16") and shape (M, N, K) on a GPU named ``gpu_name``."""
    tuned = _tuned_table(gpu_name).get((kind, n, k, m_bucket(m))) if gpu_name else None
    if tuned is not None:
        stages = min(tuned.stages, gemm_max_stages(kind, tuned.block_m, tuned.block_n, smem_limit,
                                                   tuned.split_k > 1))  # bf16-out budget unless split-K
        return dataclasses.replace(tuned, stages=stages, num_sms=num_sms)
    return heuristic_gemm_config(kind, m, n, k, num_sms, smem_limit)
