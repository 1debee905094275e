"""Random initialisation of a VAMBA model (tiny test models, ablations, benchmarks).

Qwen2-VL's rule for the LLM (Linear/Embedding ~ N(0, initializer_range), biases 0, norms 1),
the `transformers` vision tower's own init, mamba's init for the mixers with out_proj rescaled by
1/sqrt(n_layers), α = 0.5. Works after ``meta.materialize`` (buffers keep their real values there).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from vamba_eval.models.vamba.mixers import MambaBlock, rescale_out_proj


@torch.no_grad()
def _init_llm_module(module: nn.Module, std: float) -> None:
    if isinstance(module, nn.Linear):
        module.weight.normal_(0.0, std)
        if module.bias is not None:
            module.bias.zero_()
    elif isinstance(module, nn.Embedding):
        module.weight.normal_(0.0, std)
    elif hasattr(module, "variance_epsilon") and isinstance(getattr(module, "weight", None), nn.Parameter):
        module.weight.fill_(1.0)  # Qwen2VLRMSNorm


@torch.no_grad()
def _init_vision(visual: nn.Module, std: float) -> None:
    for module in visual.modules():
        if isinstance(module, (nn.Linear, nn.Conv3d)):
            module.weight.normal_(0.0, std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()


@torch.no_grad()
def init_vamba_weights(model: nn.Module, seed: Optional[int] = None) -> None:
    """Initialise every parameter of a ``VambaForConditionalGeneration`` in place."""
    if seed is not None:
        torch.manual_seed(seed)
    std = float(model.config.raw.get("initializer_range", 0.02))
    _init_vision(model.visual, std)
    for name, module in model.named_modules():
        if name.startswith("visual") or isinstance(module, MambaBlock) or ".vision_mixer" in name:
            continue
        _init_llm_module(module, std)
    _init_llm_module(model.lm_head, std)
    n_layers = len(model.layers)
    for layer in model.layers:
        if layer.alpha is not None:
            layer.alpha.fill_(0.5)
        if layer.vision_mixer is not None:
            layer.vision_mixer.reset_parameters()
            rescale_out_proj(layer.vision_mixer, n_layers)
