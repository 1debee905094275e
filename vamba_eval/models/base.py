"""The model-adapter contract and what every adapter shares (chat template, timing, memory)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Optional

import torch

from vamba_eval.types import Prediction, Prompt, Request

DEFAULT_SYSTEM = "You are a helpful assistant."


@dataclass(frozen=True)
class ModelSpec:
    """How a run asks for a model (CLI/--config → adapter factory)."""

    name: str
    path: Optional[str] = None
    device: str = "cpu"
    dtype: Optional[str] = None  # "bfloat16" | "float16" | "float32"; None = the checkpoint's / fp32 on CPU
    ssm_backend: Optional[str] = None  # vamba only: auto | torch | fla | mamba_ssm
    seed: int = 0
    chunk_frames: Optional[int] = None  # vamba streaming prefill chunk
    compile: bool = False  # vamba: torch.compile the video path (CUDA; ~20 s warm-up)


class ModelAdapter(ABC):
    """``generate(batch) -> predictions``; the adapter owns the chat template."""

    name: str = "model"
    batch_size: int = 1

    @abstractmethod
    def generate(self, batch: list[Request]) -> list[Prediction]:
        ...

    def frame_budget(self) -> Optional[int]:
        """Most frames this model takes (None: no limit of its own)."""
        return None

    def reset_state(self) -> None:
        """Drop per-video state between samples (none by default)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Recorded in config.json: name, path, dtype, device, params, untrained, backend …"""


def qwen_chat(prompt: Prompt, video_tokens: str) -> str:
    """Qwen2-VL's chat template, video first in the user turn; ``assistant_prefix`` starts the reply."""
    system = prompt.system if prompt.system is not None else DEFAULT_SYSTEM
    return (f"<|im_start|>system\n{system}<|im_end|>\n"
            f"<|im_start|>user\n<|vision_start|>{video_tokens}<|vision_end|>{prompt.user}<|im_end|>\n"
            f"<|im_start|>assistant\n{prompt.assistant_prefix}")


def resolve_dtype(name: Optional[str], device: torch.device) -> torch.dtype:
    if name is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        dtype = getattr(torch, name)
    except AttributeError:
        raise ValueError(f"unknown dtype {name!r}; use bfloat16, float16 or float32") from None
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}; use bfloat16, float16 or float32")
    return dtype


class PeakMemory:
    """Peak CUDA memory of a block (None on CPU)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak: Optional[int] = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.peak = int(torch.cuda.max_memory_allocated(self.device))


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def timed() -> float:
    return time.perf_counter()
