"""The model-adapter contract and what every adapter shares (chat template, timing, memory)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, Optional, Sequence

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
    """Qwen2-VL's chat template, video first in the user turn; ``assistant_prefix`` starts the reply.

    A prompt with ``interleave`` entries is refused (ValueError, recorded as a sample error): use
    ``qwen_chat_segments`` (texts between frame groups) or ``prepend_interleave`` first.
    """
    if prompt.interleave:
        raise ValueError("qwen_chat: the prompt interleaves text with the frames; build it with "
                         "qwen_chat_segments, or apply prepend_interleave first (never drop the texts)")
    return qwen_chat_segments(prompt, [(video_tokens, "")])


def qwen_chat_segments(prompt: Prompt, segments: Sequence[tuple[str, str]], lead: str = "") -> str:
    """Qwen2-VL's chat template with the video split in groups: ``lead``, then per segment
    ``<|vision_start|>{video tokens}<|vision_end|>{text after it}``, then ``prompt.user``.

    With one segment and no texts this is exactly ``qwen_chat`` (byte for byte)."""
    system = prompt.system if prompt.system is not None else DEFAULT_SYSTEM
    body = lead + "".join(f"<|vision_start|>{video}<|vision_end|>{text}" for video, text in segments)
    return (f"<|im_start|>system\n{system}<|im_end|>\n"
            f"<|im_start|>user\n{body}{prompt.user}<|im_end|>\n"
            f"<|im_start|>assistant\n{prompt.assistant_prefix}")


def interleave_text(texts: Sequence[str]) -> str:
    """How interleaved texts are written into a prompt: one per line, each ending with a newline
    ("" for none), so that the next video block or ``user`` starts on its own line."""
    return "".join(f"{text}\n" for text in texts)


def prepend_interleave(prompt: Prompt) -> Prompt:
    """For adapters whose video tokens are not in the text sequence (VAMBA): the interleaved
    texts, in order, before ``user``; the result has no ``interleave`` entries."""
    if not prompt.interleave:
        return prompt
    texts = interleave_text([text for _, text in prompt.interleave])
    return replace(prompt, user=texts + prompt.user, interleave=())


def frame_groups(interleave: Sequence[tuple[int, str]], n_frames: int,
                 temporal: int = 2) -> tuple[list[str], list[tuple[int, int, list[str]]]]:
    """Split ``n_frames`` frames at the ``Prompt.interleave`` boundaries for a model whose video
    tokens cover ``temporal`` frames each (Qwen2-VL: 2).

    Rule: a boundary ``k`` that falls inside a temporal patch is rounded UP to the next multiple
    of ``temporal`` (capped at ``n_frames`` rounded up), so a text can move later by at most
    ``temporal - 1`` frames, never earlier: every frame the benchmark puts before a text stays
    before it (LongVideoBench puts a subtitle after the frames at or before its midpoint). Every
    group but the last is a whole number of patches; the last is padded the way the whole video
    would be. Returns (texts before the first frame, [(start, end, texts after the group)]), the
    groups non-empty, consecutive and covering ``[0, n_frames)``.
    """
    if n_frames < 1 or temporal < 1:
        raise ValueError(f"frame_groups: need n_frames >= 1 and temporal >= 1, got {n_frames}, {temporal}")
    padded = -(-n_frames // temporal) * temporal
    after: dict[int, list[str]] = {}
    for k, text in interleave:
        if not 0 <= k <= n_frames:
            raise ValueError(f"Prompt.interleave entry ({k}, …) is outside the request's {n_frames} frames")
        after.setdefault(min(padded, -(-k // temporal) * temporal), []).append(text)
    lead = after.pop(0, [])
    groups, start = [], 0
    for end in sorted(set(after) | {padded}):
        groups.append((start, min(end, n_frames), after.get(end, [])))
        start = end
    return lead, groups


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
