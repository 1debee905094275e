"""One VAMBA decoder layer, built from `transformers`' Qwen2-VL pieces.

Two streams: text ``h`` [b, N, d] and video ``v`` [b, M, d] (video tokens are NOT in the text
sequence). Per layer, exactly as the released model (shared/specs/vamba_model.md)::

    x  = input_layernorm(h)
    sa = self_attn(x)                        # causal, text only, M-RoPE with 1-D positions
    ca = cross_attn(q = x, kv = v)           # all M video tokens, GQA, no RoPE / no norm (released)
    h  = h + α·sa + (1−α)·ca                 # α ∈ [0, 1], one scalar per layer
    v  = v + Mamba(RMSNorm(v))               # AFTER cross_attn has read v
    h  = h + mlp(post_attention_layernorm(h))

The video half (``video_kv`` then ``video_update``) never looks at the text, which is what lets
``modeling.VambaForConditionalGeneration.encode_video`` stream it chunk by chunk.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.qwen2_vl import modeling_qwen2_vl as _qwen2vl
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2MLP, Qwen2VLAttention, rotate_half

from vamba_eval.models.vamba.config import VambaConfig
from vamba_eval.models.vamba.mixers import Mamba1Mixer, Mamba2Mixer, MambaBlock, MixerState

# transformers renamed Qwen2VLAttention.forward's ``past_key_values`` to ``cache`` (5.2x; the old name warns and
# goes in 5.40): pass the KV cache under whichever name the installed version declares.
_CACHE_KWARG = "cache" if "cache" in inspect.signature(Qwen2VLAttention.forward).parameters else "past_key_values"

KV = tuple[torch.Tensor, torch.Tensor]  # each [b, kv_heads, M, head_dim]
# The RMSNorm class was renamed across transformers 5.x releases.
Qwen2VLRMSNorm = getattr(_qwen2vl, "Qwen2VLRMSNorm", None) or getattr(_qwen2vl, "Qwen2RMSNorm")


class VambaCrossAttention(nn.Module):
    """Text → video attention with the parameter shapes of Qwen2-VL self-attention (q/k/v bias, o no bias)."""

    def __init__(self, text_cfg: Any, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = text_cfg.num_attention_heads
        self.num_kv_heads = text_cfg.num_key_value_heads
        self.head_dim = text_cfg.hidden_size // self.num_heads
        d = text_cfg.hidden_size
        self.q_proj = nn.Linear(d, self.num_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, d, bias=False)

    def project_kv(self, video: torch.Tensor, rope: Optional[KV] = None) -> KV:
        b, m, _ = video.shape
        k = self.k_proj(video).view(b, m, self.num_kv_heads, self.head_dim).transpose(1, 2)  # [b, kvh, M, hd]
        v = self.v_proj(video).view(b, m, self.num_kv_heads, self.head_dim).transpose(1, 2)  # [b, kvh, M, hd]
        if rope is not None:
            cos, sin = rope  # [b, M, hd]
            k = k * cos.unsqueeze(1) + rotate_half(k) * sin.unsqueeze(1)
        return k, v

    def forward(self, x: torch.Tensor, kv: KV, rope: Optional[KV] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # [b, H, N, hd]
        if rope is not None:
            cos, sin = rope
            q = q * cos.unsqueeze(1) + rotate_half(q) * sin.unsqueeze(1)
        k, v = kv
        out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask, is_causal=False,
                                             enable_gqa=self.num_heads != self.num_kv_heads)  # [b, H, N, hd]
        return self.o_proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))


def build_mixer_block(cfg: VambaConfig, layer_idx: int) -> Optional[MambaBlock]:
    """The video mixer of one layer for ``cfg.mixer_type`` (None for the 'none' ablation)."""
    if cfg.mixer_type == "none":
        return None
    kwargs = cfg.mixer_kwargs()
    mixer_cls = Mamba1Mixer if cfg.mixer_type == "mamba1" else Mamba2Mixer
    mixer = mixer_cls(layer_idx=layer_idx, **kwargs)
    return MambaBlock(mixer, kwargs["d_model"], norm_eps=cfg.mixer.layer_norm_epsilon)


class VambaDecoderLayer(nn.Module):
    def __init__(self, cfg: VambaConfig, text_cfg: Any, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        d = text_cfg.hidden_size
        self.self_attn = Qwen2VLAttention(text_cfg, layer_idx)
        self.cross_attn = VambaCrossAttention(text_cfg, layer_idx)
        self.mlp = Qwen2MLP(text_cfg)
        self.input_layernorm = Qwen2VLRMSNorm(d, eps=text_cfg.rms_norm_eps)
        self.post_attention_layernorm = Qwen2VLRMSNorm(d, eps=text_cfg.rms_norm_eps)
        self.alpha = nn.Parameter(torch.full((1,), 0.5)) if cfg.vamba.use_alpha_balancing else None
        self.vision_mixer = build_mixer_block(cfg, layer_idx)
        self.norm_video = cfg.vamba.cross_attn_use_layer_norm
        self.use_rope = cfg.vamba.cross_attn_use_position_embeddings

    # --- video half ----------------------------------------------------------------------
    def video_in(self, v: torch.Tensor) -> torch.Tensor:
        """The stream as cross-attention and the mixer see it (official: normed in place if the flag is on)."""
        return self.input_layernorm(v) if self.norm_video else v

    def video_kv(self, v: torch.Tensor, rope: Optional[KV] = None) -> KV:
        return self.cross_attn.project_kv(self.video_in(v), rope if self.use_rope else None)

    def video_update(self, v: torch.Tensor, state: Optional[MixerState] = None) -> tuple[torch.Tensor, Optional[MixerState]]:
        v = self.video_in(v)
        if self.vision_mixer is None:
            return v, state
        return self.vision_mixer(v, state)

    # --- text half -----------------------------------------------------------------------
    def mix_weight(self) -> Optional[torch.Tensor]:
        if self.alpha is None:
            return None
        if self.training:  # the official code clamps the parameter in place every step
            with torch.no_grad():
                self.alpha.clamp_(0.0, 1.0)
            return self.alpha
        return self.alpha.clamp(0.0, 1.0)

    def text_forward(self, h: torch.Tensor, kv: KV, position_embeddings: KV, cache: Any = None,
                     attention_mask: Optional[torch.Tensor] = None, q_rope: Optional[KV] = None,
                     cross_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.input_layernorm(h)
        sa, _ = self.self_attn(x, attention_mask=attention_mask, position_embeddings=position_embeddings,
                               **{_CACHE_KWARG: cache})
        ca = self.cross_attn(x, kv, rope=q_rope if self.use_rope else None, mask=cross_mask)
        a = self.mix_weight()
        h = h + (sa + ca if a is None else a * sa + (1 - a) * ca)
        return h + self.mlp(self.post_attention_layernorm(h))

    def forward(self, h: torch.Tensor, v: torch.Tensor, position_embeddings: KV, video_rope: Optional[KV] = None,
                q_rope: Optional[KV] = None, attention_mask: Optional[torch.Tensor] = None,
                update_video: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference (unstreamed) layer: both streams at once, in the official order."""
        kv = self.video_kv(v, video_rope)
        h = self.text_forward(h, kv, position_embeddings, attention_mask=attention_mask, q_rope=q_rope)
        if update_video:
            v, _ = self.video_update(v)
        return h, v


__all__ = ["KV", "Qwen2VLRMSNorm", "VambaCrossAttention", "VambaDecoderLayer", "build_mixer_block"]
