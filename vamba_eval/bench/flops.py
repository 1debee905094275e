"""Analytic FLOPs of VAMBA and Qwen2-VL per phase, from their config dicts.

Conventions (the usual ones, stated so every number can be re-derived by hand):

- a matmul of [n, k] × [k, m] costs 2·n·k·m FLOPs; biases, norms, activations, rotary and other
  elementwise work are not counted;
- attention core (QKᵀ and AV) costs 4·head_dim·heads per (query, key) pair; a causal mask counts
  only the pairs it keeps (queries are the last ``q`` of ``kv`` positions);
- Mamba-2 SSD scan (chunk Q, state N, head dim P): per token 2·(groups·Q·N + heads·(Q·P + 2·N·P))
  (intra-chunk CBᵀ and its product with x, chunk state in, state out), plus the depthwise conv
  2·conv_dim·d_conv — the kernels compute whole chunks, so no causal halving there;
- ``linear`` = FLOPs in weight matmuls, ``core`` = attention / scan / conv FLOPs. Training
  multiplies them differently (see :func:`train_step`).

Phases: ``vit`` (patch embed, blocks, merger), ``ssm`` (video mixers), ``cross_attn`` (VAMBA:
K/V projections of the video, q/o projections of the text, attention), ``self_attn``, ``mlp``,
``lm_head``. Frames are padded to an even count as the models do (2-frame temporal patches).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

PHASES = ("vit", "ssm", "cross_attn", "self_attn", "mlp", "lm_head")


@dataclass(frozen=True)
class VisionDims:
    depth: int
    dim: int
    mlp_dim: int
    heads: int
    channels: int
    patch: int
    temporal: int
    merge: int
    out_dim: int  # LLM hidden size (the merger's output)


@dataclass(frozen=True)
class TextDims:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass(frozen=True)
class MixerDims:
    d_model: int
    d_inner: int
    heads: int
    headdim: int
    d_state: int
    groups: int
    d_conv: int
    chunk: int


@dataclass(frozen=True)
class Geometry:
    """Video token counts for ``frames`` of ``height`` × ``width`` pixels (already multiples of 28)."""

    frames: int
    height: int
    width: int
    slices: int  # temporal patches (2 frames each)
    patches_per_slice: int  # ViT tokens per slice, before the 2×2 merge
    tokens_per_slice: int  # LLM tokens per slice

    @property
    def patches(self) -> int:
        return self.slices * self.patches_per_slice

    @property
    def video_tokens(self) -> int:
        return self.slices * self.tokens_per_slice


@dataclass
class Flops:
    """FLOPs per phase, split into weight matmuls (``linear``) and attention/scan work (``core``)."""

    linear: dict[str, float] = field(default_factory=lambda: {p: 0.0 for p in PHASES})
    core: dict[str, float] = field(default_factory=lambda: {p: 0.0 for p in PHASES})

    def add(self, phase: str, linear: float = 0.0, core: float = 0.0) -> "Flops":
        self.linear[phase] += linear
        self.core[phase] += core
        return self

    def phases(self) -> dict[str, float]:
        return {p: self.linear[p] + self.core[p] for p in PHASES}

    @property
    def total(self) -> float:
        return sum(self.phases().values())


# --------------------------------------------------------------------------- dims from configs


def vision_dims(raw: dict[str, Any]) -> VisionDims:
    """The Qwen2-VL vision tower of a flat config dict (official layout, ``vision_config``)."""
    v = raw["vision_config"]
    dim = int(v["embed_dim"])
    return VisionDims(depth=int(v["depth"]), dim=dim, mlp_dim=int(dim * v.get("mlp_ratio", 4)),
                      heads=int(v["num_heads"]), channels=int(v.get("in_chans", v.get("in_channels", 3))),
                      patch=int(v["patch_size"]), temporal=int(v.get("temporal_patch_size", 2)),
                      merge=int(v.get("spatial_merge_size", 2)), out_dim=int(raw["hidden_size"]))


def text_dims(raw: dict[str, Any]) -> TextDims:
    return TextDims(hidden=int(raw["hidden_size"]), layers=int(raw["num_hidden_layers"]),
                    heads=int(raw["num_attention_heads"]), kv_heads=int(raw["num_key_value_heads"]),
                    intermediate=int(raw["intermediate_size"]), vocab=int(raw["vocab_size"]))


def mixer_dims(raw: dict[str, Any]) -> Optional[MixerDims]:
    """VAMBA's Mamba-2 video mixer (None when the config has no mixer)."""
    from vamba_eval.models.vamba.config import VambaConfig

    cfg = VambaConfig.from_dict(raw)
    if cfg.mixer_type != "mamba2":
        return None  # Mamba-1 / no-mixer ablations are not benchmarked
    k = cfg.mixer_kwargs()
    d_inner = k["d_model"] * k["expand"]
    return MixerDims(d_model=k["d_model"], d_inner=d_inner, heads=d_inner // k["headdim"], headdim=k["headdim"],
                     d_state=k["d_state"], groups=k["ngroups"], d_conv=k["d_conv"], chunk=k["chunk_size"])


def geometry(vision: VisionDims, frames: int, height: int, width: int) -> Geometry:
    if height % (vision.patch * vision.merge) or width % (vision.patch * vision.merge):
        raise ValueError(f"frame size {width}x{height} is not a multiple of {vision.patch * vision.merge}")
    slices = -(-frames // vision.temporal)  # odd counts are padded with the last frame
    per_slice = (height // vision.patch) * (width // vision.patch)
    return Geometry(frames, height, width, slices, per_slice, per_slice // vision.merge ** 2)


# --------------------------------------------------------------------------- building blocks


def attn_core(heads: int, head_dim: int, q: int, kv: int, causal: bool) -> float:
    """QKᵀ + AV for ``q`` queries (the last ``q`` of ``kv`` positions when causal)."""
    pairs = q * (kv - q) + q * (q + 1) / 2 if causal else q * kv
    return 4.0 * heads * head_dim * pairs


def vit(vision: VisionDims, geo: Geometry) -> tuple[float, float]:
    """(linear, core) of the tower; attention never crosses a 2-frame slice."""
    d, n = vision.dim, geo.patches
    embed = 2.0 * n * vision.channels * vision.temporal * vision.patch ** 2 * d
    per_block = 2.0 * n * (d * 3 * d + d * d + 2 * d * vision.mlp_dim)  # qkv, proj, fc1, fc2
    merged = d * vision.merge ** 2
    merger = 2.0 * geo.video_tokens * (merged * merged + merged * vision.out_dim)
    core = geo.slices * attn_core(vision.heads, d // vision.heads, geo.patches_per_slice, geo.patches_per_slice,
                                  causal=False)
    return embed + vision.depth * per_block + merger, vision.depth * core


def mamba2(mixer: MixerDims, tokens: int) -> tuple[float, float]:
    """(linear, core) of one Mamba-2 mixer over ``tokens`` tokens."""
    conv_dim = mixer.d_inner + 2 * mixer.groups * mixer.d_state
    d_in_proj = 2 * mixer.d_inner + 2 * mixer.groups * mixer.d_state + mixer.heads  # z, x, B, C, dt
    linear = 2.0 * tokens * (mixer.d_model * d_in_proj + mixer.d_inner * mixer.d_model)
    q, n, p = mixer.chunk, mixer.d_state, mixer.headdim
    scan = 2.0 * tokens * (mixer.groups * q * n + mixer.heads * (q * p + 2 * n * p))
    conv = 2.0 * tokens * conv_dim * mixer.d_conv
    return linear, scan + conv


def qkvo(text: TextDims, q_tokens: int, kv_tokens: int) -> float:
    """Projections of one attention: q and o over ``q_tokens``, k and v over ``kv_tokens``."""
    hd = text.head_dim
    return 2.0 * (q_tokens * 2 * text.hidden * text.heads * hd + kv_tokens * 2 * text.hidden * text.kv_heads * hd)


def mlp(text: TextDims, tokens: int) -> float:
    return 2.0 * tokens * 3 * text.hidden * text.intermediate  # gate, up, down


def lm_head(text: TextDims, tokens: int) -> float:
    return 2.0 * tokens * text.hidden * text.vocab


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Workload:
    """What one timed call computes: ``frames`` of ``height``×``width``, ``text`` prompt tokens.

    ``keep_logits``: positions through lm_head (1 = last token only; 0 = every position).
    ``past``: tokens already in the text KV cache (decode steps).
    """

    frames: int
    height: int
    width: int
    text: int
    keep_logits: int = 1
    past: int = 0


def vamba_forward(raw: dict[str, Any], w: Workload, video: bool = True) -> tuple[Flops, Geometry]:
    """VAMBA: video stream (ViT, per-layer K/V, mixers on all but the last layer) + ``w.text`` tokens.

    ``video=False``: only the text part (decode steps reuse the cached cross-attention K/V).
    """
    vision, text, mixer = vision_dims(raw), text_dims(raw), mixer_dims(raw)
    geo = geometry(vision, w.frames, w.height, w.width)
    m, n, f = geo.video_tokens, w.text, Flops()
    if video:
        f.add("vit", *vit(vision, geo))
        f.add("cross_attn", linear=text.layers * 2.0 * m * 2 * text.hidden * text.kv_heads * text.head_dim)
        if mixer is not None:
            lin, core = mamba2(mixer, m)
            f.add("ssm", (text.layers - 1) * lin, (text.layers - 1) * core)  # last layer's update unused
    hd = text.head_dim
    f.add("cross_attn", linear=text.layers * 2.0 * n * 2 * text.hidden * text.heads * hd,
          core=text.layers * attn_core(text.heads, hd, n, m, causal=False))
    f.add("self_attn", linear=text.layers * qkvo(text, n, n),
          core=text.layers * attn_core(text.heads, hd, n, w.past + n, causal=True))
    f.add("mlp", linear=text.layers * mlp(text, n))
    f.add("lm_head", linear=lm_head(text, n if w.keep_logits == 0 else min(w.keep_logits, n)))
    return f, geo


def qwen2vl_forward(raw: dict[str, Any], w: Workload, video: bool = True) -> tuple[Flops, Geometry]:
    """Qwen2-VL: ViT, then video tokens inside the text sequence through every layer (causal)."""
    vision, text = vision_dims(raw), text_dims(raw)
    geo = geometry(vision, w.frames, w.height, w.width)
    f = Flops()
    s = w.text + (geo.video_tokens if video else 0)  # new tokens of this call
    if video:
        f.add("vit", *vit(vision, geo))
    past = w.past + (0 if video else geo.video_tokens)
    f.add("self_attn", linear=text.layers * qkvo(text, s, s),
          core=text.layers * attn_core(text.heads, text.head_dim, s, past + s, causal=True))
    f.add("mlp", linear=text.layers * mlp(text, s))
    f.add("lm_head", linear=lm_head(text, s if w.keep_logits == 0 else min(w.keep_logits, s)))
    return f, geo


def forward(model: str, raw: dict[str, Any], w: Workload, video: bool = True) -> tuple[Flops, Geometry]:
    if model == "vamba":
        return vamba_forward(raw, w, video)
    if model == "qwen2vl":
        return qwen2vl_forward(raw, w, video)
    raise ValueError(f"unknown model {model!r}; expected vamba or qwen2vl")


def prefill(model: str, raw: dict[str, Any], w: Workload) -> tuple[Flops, Geometry]:
    return forward(model, raw, w)


def decode_token(model: str, raw: dict[str, Any], w: Workload, step: int) -> Flops:
    """One greedy step after the prompt (``w.text`` tokens) and ``step`` generated tokens."""
    one = Workload(w.frames, w.height, w.width, text=1, keep_logits=1, past=w.text + step)
    return forward(model, raw, one, video=False)[0]


def decode_mean(model: str, raw: dict[str, Any], w: Workload, tokens: int) -> Flops:
    """Mean FLOPs per decoded token over ``tokens`` steps (attention grows with the context)."""
    out = Flops()
    for step in range(tokens):
        f = decode_token(model, raw, w, step)
        for p in PHASES:
            out.add(p, f.linear[p] / tokens, f.core[p] / tokens)
    return out


def train_step(model: str, raw: dict[str, Any], w: Workload, trainable: tuple[str, ...]) -> tuple[Flops, Geometry]:
    """Forward + backward of one step with per-layer gradient checkpointing.

    The ViT is frozen and needs no gradient (forward once). Every decoder phase runs forward twice
    (the checkpoint recomputes it) and backward: weight matmuls cost 2× their forward when trainable
    (input and weight gradients), 1× when frozen (input gradient only); attention and scan cores 2×.
    lm_head is outside the checkpoints (forward once, backward 1×: frozen).
    """
    fwd, geo = forward(model, raw, w)
    out = Flops()
    for p in PHASES:
        if p == "vit":
            out.add(p, fwd.linear[p], fwd.core[p])
        elif p == "lm_head":
            out.add(p, 2 * fwd.linear[p], 2 * fwd.core[p])
        else:
            out.add(p, fwd.linear[p] * (2 + (2 if p in trainable else 1)), fwd.core[p] * 4)
    return out, geo
