"""jitkern: JIT-compiled (NVRTC) Hopper kernels for LLM inference.

Public API re-exports. They resolve lazily, so ``import jitkern`` (and the warmup worker
processes, which only compile) do not pay for importing torch.
"""
__version__ = "0.1.0"

_EXPORTS = {
    "per_token_group_quant_fp8": "jitkern.ops.quant",
    "per_block_quant_fp8": "jitkern.ops.quant",
    "empty_token_group_scales": "jitkern.ops.quant",
    "moe_align": "jitkern.ops.moe",
    "moe_permute": "jitkern.ops.moe",
    "moe_unpermute": "jitkern.ops.moe",
    "mla_metadata": "jitkern.ops.mla",
    "mla_decode": "jitkern.ops.mla",
    "mla_check_errors": "jitkern.ops.mla",
    "MLAMetadata": "jitkern.ops.mla",
    "verify_greedy": "jitkern.ops.speculative",
    "verify_sampled": "jitkern.ops.speculative",
    "verify_tree_greedy": "jitkern.ops.speculative",
    "verify_tree_sampled": "jitkern.ops.speculative",
    "markov_draft": "jitkern.ops.speculative",
    "select_draft_length": "jitkern.ops.speculative",
    "gemm_fp8_nt": "jitkern.ops.gemm",
    "gemm_bf16_nt": "jitkern.ops.gemm",
    "grouped_m_alignment": "jitkern.ops.gemm",
    "grouped_gemm_fp8_contiguous": "jitkern.ops.gemm",
    "grouped_gemm_bf16_contiguous": "jitkern.ops.gemm",
    "grouped_gemm_fp8_masked": "jitkern.ops.gemm",
    "grouped_gemm_bf16_masked": "jitkern.ops.gemm",
    "JitCompileError": "jitkern.runtime",
    "KernelSpec": "jitkern.runtime",
    "get_kernel": "jitkern.runtime",
    "compile_spec": "jitkern.runtime",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'jitkern' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
