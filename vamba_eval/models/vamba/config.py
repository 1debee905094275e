"""VAMBA configuration: the official config.json (a Qwen2-VL config plus the VAMBA fields).

The official checkpoint's config.json is a flat Qwen2-VL config (``hidden_size``, ``rope_scaling``,
``vision_config`` …) with these additions:

    use_alpha_balancing                 bool   one α per layer mixing self- and cross-attention
    vision_mamba_mixer_config           dict   Mamba fields + ``enable``
    cross_attn_use_position_embeddings  bool   M-RoPE on cross-attention q/k (released: false)
    cross_attn_use_layer_norm           bool   input_layernorm on the video stream (released: false)
    distill_coeff                       float  λ of the stage-1 KL term (released: 0.0)

and our own ``mixer_type`` (``mamba2`` | ``mamba1`` | ``none``) for the ablations. Unknown keys
are kept verbatim and written back; known keys are type-checked with a message naming the key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vamba_eval.errors import explain_validation

MixerType = Literal["mamba2", "mamba1", "none"]


class ConfigError(ValueError):
    """config.json is missing, unreadable or has a wrong value; the message names key and fix."""


class MambaMixerConfig(BaseModel):
    """``vision_mamba_mixer_config``: every field of mamba_ssm's Mamba2 / Mamba constructors."""

    model_config = ConfigDict(extra="allow", strict=False)
    enable: bool = True
    d_model: Optional[int] = None  # defaults to the text hidden size
    d_state: int = Field(128, gt=0)
    d_conv: int = Field(4, gt=0)
    expand: int = Field(2, gt=0)
    headdim: int = Field(64, gt=0)
    ngroups: int = Field(1, gt=0)
    chunk_size: int = Field(256, gt=0)
    A_init_range: tuple[float, float] = (1.0, 16.0)
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    dt_limit: tuple[float, float] = (0.0, float("inf"))
    dt_rank: Any = "auto"  # Mamba-1 only
    bias: bool = False
    conv_bias: bool = True
    norm_before_gate: bool = False
    rmsnorm: bool = True
    layer_norm_epsilon: float = 1e-5  # the pre-norm of the residual block
    rmsnorm_eps: float = 1e-5  # the gated norm inside the mixer
    residual_in_fp32: bool = True
    rescale_prenorm_residual: bool = True

    @model_validator(mode="after")
    def _check(self) -> "MambaMixerConfig":
        if self.norm_before_gate:
            raise ValueError("norm_before_gate=True is not supported: VAMBA's Mamba-2 gates before the norm")
        return self


class VambaFields(BaseModel):
    """The VAMBA keys at the top level of config.json."""

    model_config = ConfigDict(extra="ignore", strict=True)
    use_alpha_balancing: bool = True
    cross_attn_use_position_embeddings: bool = False
    cross_attn_use_layer_norm: bool = False
    distill_coeff: float = 0.0
    mixer_type: MixerType = "mamba2"
    hidden_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    rms_norm_eps: float = 1e-6

    @model_validator(mode="after")
    def _heads(self) -> "VambaFields":
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be divisible by num_key_value_heads")
        return self


@dataclass(frozen=True)
class VambaConfig:
    """Validated view over the raw config dict; ``raw`` round-trips unknown keys unchanged."""

    raw: dict[str, Any]
    vamba: VambaFields
    mixer: MambaMixerConfig

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "config") -> "VambaConfig":
        raw = json.loads(json.dumps(raw))  # deep copy, JSON-clean
        raw.setdefault("vision_mamba_mixer_config", {})
        if not isinstance(raw["vision_mamba_mixer_config"], dict):
            raise ConfigError(f"{where}: vision_mamba_mixer_config must be a JSON object")
        if "mixer_type" not in raw:  # official checkpoints: infer from `enable`
            raw["mixer_type"] = "mamba2" if raw["vision_mamba_mixer_config"].get("enable", True) else "none"
        try:
            vamba = VambaFields.model_validate(raw)
            mixer = MambaMixerConfig.model_validate(raw["vision_mamba_mixer_config"])
        except ValidationError as err:
            raise ConfigError(explain_validation(
                err, where, "config", "Fix the value(s) in config.json; see shared/specs/vamba_model.md for the "
                "released settings.", show_input=True)) from None
        if (vamba.mixer_type == "none") == mixer.enable:
            raise ConfigError(
                f"{where}: mixer_type={vamba.mixer_type!r} contradicts vision_mamba_mixer_config.enable="
                f"{mixer.enable}; set enable to {vamba.mixer_type != 'none'}"
            )
        if "vision_config" not in raw or not isinstance(raw["vision_config"], dict):
            raise ConfigError(f"{where}: missing vision_config (a Qwen2-VL vision tower config object)")
        return cls(raw=raw, vamba=vamba, mixer=mixer)

    @classmethod
    def from_file(cls, path: Path) -> "VambaConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"{path}: not found; a VAMBA checkpoint folder holds config.json and *.safetensors")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from None
        return cls.from_dict(raw, where=str(path))

    def to_dict(self) -> dict[str, Any]:
        out = json.loads(json.dumps(self.raw))
        mixer = self.mixer.model_dump(mode="json")
        mixer = {k: v for k, v in mixer.items() if v is not None}
        out["vision_mamba_mixer_config"] = {**out.get("vision_mamba_mixer_config", {}), **mixer}
        return out

    def save(self, folder: Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "config.json"
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    def replace(self, **updates: Any) -> "VambaConfig":
        """A new config with top-level keys replaced (``vision_mamba_mixer_config`` merged)."""
        raw = self.to_dict()
        mix = updates.pop("vision_mamba_mixer_config", None)
        raw.update(updates)
        if mix:
            raw["vision_mamba_mixer_config"] = {**raw["vision_mamba_mixer_config"], **mix}
        return VambaConfig.from_dict(raw)

    # --- derived views -------------------------------------------------------------------
    @property
    def mixer_type(self) -> MixerType:
        return self.vamba.mixer_type

    @property
    def num_layers(self) -> int:
        return self.vamba.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.vamba.hidden_size

    @property
    def head_dim(self) -> int:
        return self.vamba.hidden_size // self.vamba.num_attention_heads

    def token_id(self, name: str, default: int) -> int:
        return int(self.raw.get(name, default))

    def mixer_kwargs(self) -> dict[str, Any]:
        """Constructor kwargs for the mixer of ``mixer_type`` (mamba_ssm argument names)."""
        m = self.mixer
        common = dict(d_model=m.d_model or self.hidden_size, d_state=m.d_state, d_conv=m.d_conv, expand=m.expand,
                      dt_min=m.dt_min, dt_max=m.dt_max, dt_init_floor=m.dt_init_floor, bias=m.bias,
                      conv_bias=m.conv_bias)
        if self.mixer_type == "mamba1":
            dt_rank = m.dt_rank if m.dt_rank != "auto" else math.ceil(common["d_model"] / 16)
            return {**common, "dt_rank": dt_rank}
        return {**common, "headdim": m.headdim, "ngroups": m.ngroups, "A_init_range": tuple(m.A_init_range),
                "dt_limit": tuple(m.dt_limit), "chunk_size": m.chunk_size, "rmsnorm_eps": m.rmsnorm_eps}

    def hf_config(self, attn_implementation: str = "sdpa") -> Any:
        """The `transformers` Qwen2VLConfig for the reused building blocks (text + vision)."""
        from transformers import Qwen2VLConfig

        raw = {k: v for k, v in self.raw.items() if k != "vision_mamba_mixer_config"}
        vision = dict(raw["vision_config"])
        if "in_chans" in vision and "in_channels" not in vision:
            vision["in_channels"] = vision["in_chans"]
        vision["hidden_size"] = self.hidden_size  # the merger projects into the LLM width
        raw["vision_config"] = vision
        cfg = Qwen2VLConfig(**raw)
        for sub in (cfg, cfg.text_config, cfg.vision_config):
            sub._attn_implementation = attn_implementation
        return cfg
