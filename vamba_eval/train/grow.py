"""Grow a trained tiny Qwen2-VL teacher in depth without changing what it computes (LLaMA-Pro style).

``grow_depth(model, n, after)`` inserts ``n`` decoder layers after the first ``after`` ones. Each new layer
is a copy of the layer before it with its two output projections (attention ``o_proj``, MLP ``down_proj``)
zeroed, so it adds nothing to the residual stream: the grown model's logits equal the original's exactly,
and training then gives the new layers work (their output projections get gradients at once, the rest
one step later). Used to test whether the teacher's plateau is a capacity limit (scripts/diagnostics).
"""

from __future__ import annotations

import copy
from typing import Any

import torch


def _text_model(model: Any) -> Any:
    """The decoder stack of a ``Qwen2VLForConditionalGeneration`` (transformers ≥ 4.52 layout)."""
    return model.model.language_model


def _identity_copy(layer: torch.nn.Module) -> torch.nn.Module:
    new = copy.deepcopy(layer)
    with torch.no_grad():
        new.self_attn.o_proj.weight.zero_()
        if new.self_attn.o_proj.bias is not None:
            new.self_attn.o_proj.bias.zero_()
        new.mlp.down_proj.weight.zero_()
    return new


def _set_depth(config: Any, depth: int) -> None:
    text = getattr(config, "text_config", config)
    for cfg in {id(text): text, id(config): config}.values():
        if hasattr(cfg, "num_hidden_layers"):
            cfg.num_hidden_layers = depth
        if getattr(cfg, "max_window_layers", None) is not None:
            cfg.max_window_layers = depth
        types = getattr(cfg, "layer_types", None)
        if types:
            if len(set(types)) != 1:
                raise ValueError(f"cannot grow a model with mixed layer types {types}")
            cfg.layer_types = [types[0]] * depth


def grow_depth(model: Any, n: int, after: int) -> Any:
    """Insert ``n`` identity-initialised decoder layers after the first ``after`` layers (in place)."""
    stack = _text_model(model)
    layers = list(stack.layers)
    if n < 1 or not 1 <= after <= len(layers):
        raise ValueError(f"grow_depth: need n ≥ 1 and 1 ≤ after ≤ {len(layers)} (got n={n}, after={after})")
    new = [_identity_copy(layers[after - 1]) for _ in range(n)]
    layers = layers[:after] + new + layers[after:]
    for idx, layer in enumerate(layers):  # the KV cache is indexed by layer_idx
        layer.self_attn.layer_idx = idx
    stack.layers = torch.nn.ModuleList(layers)
    _set_depth(model.config, len(layers))
    return model


__all__ = ["grow_depth"]
