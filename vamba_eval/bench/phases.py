"""Where a VAMBA prefill spends its time, measured from outside the model with forward hooks.

One extra prefill (not among the timed repeats) with CUDA events recorded around every video
mixer (``layer.vision_mixer``) and around each layer's cross-attention K/V projection
(``cross_attn.k_proj`` pre-hook → ``cross_attn.v_proj`` hook); the encode and the text pass are
timed apart with synchronisation. ``vit_other_s`` = encode − mixers − K/V: the ViT, patchify, the
merger and the K/V buffer copies. On CPU the same hooks read ``time.perf_counter``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch

from vamba_eval.bench.measure import timed


class _Spans:
    """Start/end marks (CUDA events or host times) of named spans."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.marks: dict[str, list[tuple[Any, Any]]] = {}
        self._open: dict[str, Any] = {}

    def _mark(self) -> Any:
        if self.device.type == "cuda":
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def start(self, name: str) -> None:
        self._open[name] = self._mark()

    def end(self, name: str) -> None:
        if name in self._open:
            self.marks.setdefault(name, []).append((self._open.pop(name), self._mark()))

    def seconds(self, name: str) -> float:
        """Total seconds of the spans called ``name`` (call after a device synchronise)."""
        total = 0.0
        for a, b in self.marks.get(name, []):
            total += a.elapsed_time(b) / 1e3 if self.device.type == "cuda" else b - a
        return total


@contextlib.contextmanager
def _hooks(model: Any, spans: _Spans) -> Iterator[None]:
    handles = []
    for layer in model.layers:
        if layer.vision_mixer is not None:
            handles.append(layer.vision_mixer.register_forward_pre_hook(lambda *a: spans.start("ssm")))
            handles.append(layer.vision_mixer.register_forward_hook(lambda *a: spans.end("ssm")))
        ca = layer.cross_attn
        handles.append(ca.k_proj.register_forward_pre_hook(lambda *a: spans.start("kv")))
        handles.append(ca.v_proj.register_forward_hook(lambda *a: spans.end("kv")))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def vamba_prefill_phases(model: Any, frames: torch.Tensor, ids: torch.Tensor) -> tuple[dict[str, float], Any]:
    """Seconds per phase of one prefill — vit_other_s, kv_s, ssm_s (all in encode_s) and text_s — and
    the prefill's VideoContext (for decoding next)."""
    from transformers import DynamicCache

    device = model.device
    spans = _Spans(device)
    with _hooks(model, spans):
        encode_s, video = timed(device, lambda: model.encode_video(frames))

    def text() -> Any:
        with torch.inference_mode():
            return model.text_step(ids, video, DynamicCache(), start=0)

    text_s, _ = timed(device, text)
    ssm, kv = spans.seconds("ssm"), spans.seconds("kv")
    times = {"encode_s": encode_s, "vit_other_s": max(0.0, encode_s - ssm - kv), "kv_s": kv, "ssm_s": ssm,
             "text_s": text_s, "chunks": video.chunks}
    return times, video
