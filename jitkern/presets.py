"""Built-in shape manifests for `jitkern warmup --preset NAME`.

A manifest maps a family name (see :data:`jitkern.warmup.PROVIDERS`) to a list of entries; each
family's ``warmup_specs(entries, target)`` turns its entries into kernel specialisations.
"""

# DeepSeek-V3 (671B): hidden 7168, MLA (q_lora 1536, kv_lora 512 + rope 64, 128 heads), MoE
# experts with intermediate 2048, dense intermediate 18432, vocab 129280.
DEEPSEEK_V3 = {
    "quant": [{"dtype": "bfloat16", "kinds": ["token_group", "block"]},
              {"dtype": "bfloat16", "kinds": ["token_group"], "round_pow2": True}],
    "moe": [{"top_k": 8}],  # 256 routed experts, 8 per token
    "mla": [{"num_heads": 128}, {"num_heads": 16}],  # h_q, s_q and page size are runtime values
    "spec": [{"dtype": "bfloat16", "token_dtype": "int64", "cu_dtype": "int32"}],  # vocab 129280 is runtime
}

PRESETS = {"deepseek-v3": DEEPSEEK_V3}
