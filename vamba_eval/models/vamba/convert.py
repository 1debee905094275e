"""Qwen2-VL → VAMBA conversion: the paper's ablation variants A–D.

    A  cross_attn_init="random",    mixer="none"
    B  cross_attn_init="self_attn", mixer="none"
    C  cross_attn_init="self_attn", mixer="mamba1"
    D  cross_attn_init="self_attn", mixer="mamba2"   (the released design)

All Qwen2-VL weights are copied; cross-attention starts as a copy of the same layer's
self-attention (or N(0, 0.02)); the mixers get mamba's init with out_proj scaled by 1/sqrt(L); α = 0.5.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch

from vamba_eval.models.vamba.config import VambaConfig
from vamba_eval.models.vamba.modeling import VambaForConditionalGeneration
from vamba_eval.models.vamba.tiny import VAMBA_FIELDS

CrossAttnInit = Literal["self_attn", "random"]
VARIANTS: dict[str, tuple[CrossAttnInit, str]] = {
    "A": ("random", "none"),
    "B": ("self_attn", "none"),
    "C": ("self_attn", "mamba1"),
    "D": ("self_attn", "mamba2"),
}
MAMBA1_DEFAULTS = {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto"}


def flat_qwen2vl_config(hf_config: Any) -> dict[str, Any]:
    """The official flat config.json dict of a `transformers` Qwen2VLConfig (text keys at top level)."""
    full = hf_config.to_dict()
    text = full.pop("text_config", None) or {}
    vision = full.pop("vision_config")
    flat = {**{k: v for k, v in text.items() if k not in ("rope_parameters", "layer_types")}, **full}
    rope = text.get("rope_parameters") or full.get("rope_parameters") or {}
    if rope:
        flat["rope_theta"] = rope.get("rope_theta", flat.get("rope_theta", 1e6))
        flat["rope_scaling"] = {"type": "mrope", "mrope_section": list(rope.get("mrope_section", [16, 24, 24]))}
    flat.pop("rope_parameters", None)
    flat["vision_config"] = vision
    flat["model_type"] = "qwen2_vl"
    flat["architectures"] = ["Qwen2VLForConditionalGeneration"]
    return flat


def vamba_config_from_qwen2vl(hf_config: Any, mixer: str = "mamba2",
                              mixer_overrides: Optional[dict[str, Any]] = None,
                              cross_attn_rope: bool = False) -> VambaConfig:
    flat = {**flat_qwen2vl_config(hf_config), **VAMBA_FIELDS, "mixer_type": mixer,
            "cross_attn_use_position_embeddings": cross_attn_rope}
    mix = dict(VAMBA_FIELDS["vision_mamba_mixer_config"])
    if mixer == "mamba1":
        mix.update(MAMBA1_DEFAULTS)
    mix.update(mixer_overrides or {})
    mix["enable"] = mixer != "none"
    flat["vision_mamba_mixer_config"] = mix
    return VambaConfig.from_dict(flat, where="converted Qwen2-VL config")


def _official_key(key: str) -> str:
    """transformers ≥ 4.52 nests the LLM under model.language_model and the ViT under model.visual."""
    if key.startswith("model.visual."):
        return key[len("model."):]
    if key.startswith("model.language_model."):
        return "model." + key[len("model.language_model."):]
    return key


@torch.no_grad()
def vamba_from_qwen2vl(qwen2vl: torch.nn.Module, cross_attn_init: CrossAttnInit = "self_attn",
                       mixer: str = "mamba2", seed: int = 0,
                       mixer_overrides: Optional[dict[str, Any]] = None,
                       cross_attn_rope: bool = False) -> VambaForConditionalGeneration:
    """Build a VAMBA variant from a `transformers` Qwen2VLForConditionalGeneration (weights copied).

    ``cross_attn_rope``: M-RoPE on the cross-attention's queries (text positions) and keys (the video tokens'
    (t, h, w) positions) — the official config's ``cross_attn_use_position_embeddings`` (released: false)."""
    if cross_attn_init not in ("self_attn", "random"):
        raise ValueError(f"cross_attn_init must be 'self_attn' or 'random', got {cross_attn_init!r}")
    if mixer not in ("mamba2", "mamba1", "none"):
        raise ValueError(f"mixer must be 'mamba2', 'mamba1' or 'none', got {mixer!r}")
    cfg = vamba_config_from_qwen2vl(qwen2vl.config, mixer, mixer_overrides, cross_attn_rope)
    src = {_official_key(k): v for k, v in qwen2vl.state_dict().items()}
    ref = next(iter(src.values()))
    model = VambaForConditionalGeneration(cfg).to(device=ref.device, dtype=ref.dtype)
    model.init_weights(seed)  # fresh parts: cross-attn (if random), mixers, alpha
    target = model.state_dict()
    unknown = sorted(k for k in src if k not in target)
    if unknown:
        raise ValueError(f"Qwen2-VL weights with no VAMBA counterpart: {unknown[:10]}")
    for k, v in src.items():
        target[k].copy_(v)
    if cross_attn_init == "self_attn":
        for layer in model.layers:
            layer.cross_attn.load_state_dict(layer.self_attn.state_dict())
    return model
