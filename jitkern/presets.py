"""Built-in shape manifests for `jitkern warmup --preset NAME`.

A manifest maps a family name (see :data:`jitkern.warmup.PROVIDERS`) to a list of entries; each
family's ``warmup_specs(entries, target)`` turns its entries into kernel specialisations.
"""

# DeepSeek-V3 (671B): hidden 7168, MLA (q_lora 1536, kv_lora 512 + rope 64, 128 heads), MoE
# experts with intermediate 2048, dense intermediate 18432, vocab 129280.
# (N, K) of the dense projections: fused q_a+kv_a, q_b, kv_b, o_proj, shared-expert gate_up, down.
_V3_DENSE_NK = [(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048)]
# Routed experts (intermediate 2048): gate_up (N = 2 * 2048, K = 7168) and down (N = 7168, K = 2048).
_V3_EXPERT_NK = [(4096, 7168), (7168, 2048)]

DEEPSEEK_V3 = {
    "gemm": [{"kind": kind, "n": n, "k": k, "m": [64, 128, 4096]} for kind in ("fp8", "bf16") for n, k in _V3_DENSE_NK]
    + [{"kind": "fp8", "n": n, "k": k, "layout": "contiguous", "groups": 32, "m": [1024]} for n, k in _V3_EXPERT_NK]
    + [{"kind": "fp8", "n": n, "k": k, "layout": "masked", "groups": 32, "m": [64, 256]} for n, k in _V3_EXPERT_NK],
    "quant": [{"dtype": "bfloat16", "kinds": ["token_group", "block"]},
              {"dtype": "bfloat16", "kinds": ["token_group"], "round_pow2": True}],
    "moe": [{"top_k": 8}],  # 256 routed experts, 8 per token
    "mla": [{"num_heads": 128}, {"num_heads": 16}],  # h_q, s_q and page size are runtime values
    "spec": [{"dtype": "bfloat16", "token_dtype": "int64", "cu_dtype": "int32"}],  # vocab 129280 is runtime
}

PRESETS = {"deepseek-v3": DEEPSEEK_V3}
