"""Config dicts in the official flat Qwen2-VL layout: the released 7B and tiny seeded test models.

The tiny models keep every structural feature of the 7B (GQA, M-RoPE sections, 2-frame temporal
patches, 2×2 merger, grouped Mamba-2 heads) at a few million parameters, so the same code runs both.
"""

from __future__ import annotations

from typing import Any, Optional

QWEN2VL_7B: dict[str, Any] = {
    "architectures": ["Qwen2VLForConditionalGeneration"],
    "model_type": "qwen2_vl",
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "pad_token_id": 151643,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "sliding_window": 32768,
    "use_sliding_window": False,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 152064,
    "vision_config": {
        "depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
        "hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2, "spatial_patch_size": 14,
        "temporal_patch_size": 2,
    },
}

VAMBA_FIELDS: dict[str, Any] = {
    "use_alpha_balancing": True,
    "cross_attn_use_position_embeddings": False,
    "cross_attn_use_layer_norm": False,
    "distill_coeff": 0.0,
    "vision_mamba_mixer_config": {
        "enable": True, "d_state": 128, "d_conv": 4, "expand": 2, "headdim": 64, "ngroups": 1,
        "chunk_size": 256, "A_init_range": [1, 16], "dt_min": 0.001, "dt_max": 0.1, "dt_init_floor": 1e-4,
        "bias": False, "conv_bias": True, "norm_before_gate": False, "layer_norm_epsilon": 1e-5,
    },
}

VAMBA_7B: dict[str, Any] = {**QWEN2VL_7B, **VAMBA_FIELDS}

# Special-token ids of ``vamba_eval.models.tokenizer.build_byte_tokenizer`` (checked by a test).
TINY_TOKEN_IDS: dict[str, int] = {
    "bos_token_id": 256, "pad_token_id": 256, "eos_token_id": 258, "vision_start_token_id": 259,
    "vision_end_token_id": 260, "vision_token_id": 261, "image_token_id": 262, "video_token_id": 263,
}


def tiny_qwen2vl_config(vocab_size: int = 264, token_ids: Optional[dict[str, int]] = None,
                        layers: int = 2, hidden: int = 64) -> dict[str, Any]:
    """A few-M-parameter Qwen2-VL config (official flat layout)."""
    heads = max(1, hidden // 16)  # head_dim 16 → M-RoPE sections sum to 8
    cfg = {**QWEN2VL_7B, "hidden_size": hidden, "intermediate_size": hidden * 2, "num_attention_heads": heads,
           "num_key_value_heads": max(1, heads // 2), "num_hidden_layers": layers, "max_window_layers": layers,
           "vocab_size": vocab_size, "max_position_embeddings": 4096, "sliding_window": 4096,
           "rope_theta": 10000.0, "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
           "torch_dtype": "float32"}
    cfg["vision_config"] = {**QWEN2VL_7B["vision_config"], "depth": 2, "embed_dim": 32, "num_heads": 2,
                            "mlp_ratio": 2, "hidden_size": hidden}
    cfg.update(TINY_TOKEN_IDS if token_ids is None else token_ids)
    return cfg


def tiny_vamba_config(mixer_type: str = "mamba2", vocab_size: int = 264,
                      token_ids: Optional[dict[str, int]] = None, layers: int = 2, hidden: int = 64) -> dict[str, Any]:
    """The tiny VAMBA config for tests and the demo; ``mixer_type`` picks the ablation variant."""
    cfg = {**tiny_qwen2vl_config(vocab_size, token_ids, layers, hidden), **VAMBA_FIELDS, "mixer_type": mixer_type}
    mixer = {**VAMBA_FIELDS["vision_mamba_mixer_config"], "d_state": 16, "headdim": 16, "chunk_size": 16,
             "enable": mixer_type != "none"}
    cfg["vision_mamba_mixer_config"] = mixer
    return cfg
