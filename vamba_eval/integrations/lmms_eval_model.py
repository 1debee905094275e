"""VAMBA (and our Qwen2-VL baseline) as lmms-eval models.

    pip install 'vamba-eval[lmms-eval]'
    lmms-eval --model vamba --model_args pretrained=/ckpt/Vamba-Qwen2-VL-7B,device=cuda --tasks videomme

Registration: lmms-eval (0.5+; checked against 0.7.3, ``lmms_eval/models/registry_v2.py``) reads the
``lmms_eval.models`` entry-point group; ours points at ``manifests()``, which returns one
``ModelManifest`` per model: ``vamba`` and ``vamba_eval_qwen2vl`` (lmms-eval's own ``qwen2_vl`` is left
alone). Both are "simple" models: lmms-eval hands ``generate_until`` a list of ``Instance`` whose
``args`` are ``(context, gen_kwargs, doc_to_visual, doc_id, task, split)``; the doc is
``self.task_dict[task][split][doc_id]`` and ``doc_to_visual(doc)`` gives, for video tasks, a list
with one video path. We decode it with vamba-eval's PyAV decoder (``vamba_eval.video.load_frames``)
and answer through the vamba-eval model adapter, which owns the chat template; ``context`` (the
task's prompt as lmms-eval words it) is the user text.

``--model_args`` (all optional): ``pretrained`` (checkpoint folder; default: the bundled tiny
model), ``device``, ``dtype``, ``ssm_backend``, ``chunk_frames``, ``compile``, ``seed``,
``max_frames_num`` (alias ``frames``), ``max_edge``, ``min_edge`` (``none`` = no floor), ``sampler``,
``frame_folder_fps``, ``system_prompt``, ``on_error`` (``raise`` | ``empty``). Frames default to the
matching vamba-eval task's paper setting (Video-MME 512 frames 480/256, LVBench 1024 560/256 …),
else 32 frames.

Not supported (each raises an error that says so): ``loglikelihood`` (likelihood-scored tasks),
``generate_until_multi_round``, chat-model mode (``is_simple=False`` tasks built from
``doc_to_messages``), more than one video per request, text-only requests. Sampling settings
(``temperature`` > 0, ``do_sample``, ``num_beams`` > 1) are ignored with a warning: the adapters
decode greedily. ``until`` stop strings cut the output. Batches are answered one request at a time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from typing import Any, Optional

import numpy as np

try:
    from lmms_eval.api.instance import Instance
    from lmms_eval.api.model import lmms
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("vamba_eval.integrations.lmms_eval_model needs lmms-eval: "
                      "pip install 'vamba-eval[lmms-eval]'") from err

from vamba_eval.models.base import ModelAdapter, ModelSpec
from vamba_eval.types import Prompt, Request

log = logging.getLogger("vamba_eval.lmms_eval")
ALIASES = {"frames": "max_frames_num", "num_frames": "max_frames_num", "model_path": "pretrained"}
DEFAULT_FRAMES = 32
DEFAULT_MAX_NEW_TOKENS = 128
NO_EDGE = 1 << 20  # "no cap": frames are still rounded to the 28-pixel grid the ViT needs


class PluginArgError(ValueError):
    """A bad ``--model_args`` value; the message names it and the accepted ones."""


@dataclass(frozen=True)
class PluginOptions:
    """``--model_args`` of the vamba-eval lmms-eval models."""

    pretrained: Optional[str] = None
    device: Optional[str] = None
    dtype: Optional[str] = None
    ssm_backend: Optional[str] = None
    chunk_frames: Optional[int] = None
    compile: bool = False
    seed: int = 0
    max_frames_num: Optional[int] = None
    max_edge: Optional[int] = None
    min_edge: Optional[int] = None
    sampler: Optional[str] = None
    frame_folder_fps: Optional[float] = None
    system_prompt: Optional[str] = None
    on_error: str = "raise"
    batch_size: Any = 1  # accepted (lmms-eval passes it); requests are answered one at a time
    max_batch_size: Any = None

    @classmethod
    def parse(cls, kwargs: dict[str, Any]) -> "PluginOptions":
        known = {f.name for f in fields(cls)}
        values = {ALIASES.get(k, k): v for k, v in kwargs.items() if v is not None}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PluginArgError(f"unknown --model_args key(s) {', '.join(unknown)} for the vamba-eval lmms-eval model; "
                                 f"accepted: {', '.join(sorted(known | set(ALIASES)))}")
        for key in ("min_edge", "max_edge", "max_frames_num", "chunk_frames"):
            if isinstance(values.get(key), str) and values[key].lower() == "none":
                values[key] = None
        if values.get("on_error", "raise") not in ("raise", "empty"):
            raise PluginArgError(f"on_error={values['on_error']!r}: use on_error=raise (stop at the first unreadable "
                                 "video) or on_error=empty (answer '' and go on)")
        for key in ("chunk_frames", "seed", "max_frames_num", "max_edge", "min_edge"):
            if values.get(key) is not None and not isinstance(values[key], int):
                raise PluginArgError(f"--model_args {key}={values[key]!r}: expected an integer")
        return cls(**values)


def _default_device(device: Optional[str]) -> str:
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rank = os.environ.get("LOCAL_RANK")
    if device == "cuda" and rank is not None:  # one lmms-eval process per GPU (accelerate / torchrun)
        device = f"cuda:{int(rank)}"
    return device


def _images_to_frames(images: list[Any], max_edge: Optional[int], min_edge: Optional[int]) -> np.ndarray:
    from vamba_eval.video import target_size

    first = images[0].convert("RGB")
    size = target_size(first.width, first.height, max_edge, min_edge)
    frames = [np.asarray(im.convert("RGB").resize(size)) for im in images]
    if len(frames) % 2:  # a temporal patch covers 2 frames: repeat the last (as Qwen2-VL does for images)
        frames.append(frames[-1])
    return np.stack(frames).astype(np.uint8)


class _VambaEvalLMMs(lmms):
    """Shared lmms-eval glue; subclasses name the vamba-eval adapter."""

    is_simple = True
    adapter_name = "vamba"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.options = PluginOptions.parse(kwargs)
        opts = self.options
        self.device_name = _default_device(opts.device)
        from vamba_eval.registry import get_model_factory

        spec = ModelSpec(self.adapter_name, opts.pretrained, self.device_name, opts.dtype, opts.ssm_backend, opts.seed,
                         opts.chunk_frames, bool(opts.compile))
        self.adapter: ModelAdapter = get_model_factory(self.adapter_name)(spec)
        self._warned: set[str] = set()
        info = self.adapter.describe()
        (log.warning if info.get("untrained") else log.info)("vamba-eval %s model loaded: %s", self.adapter_name, info)

    # ------------------------------------------------------------------ lmms-eval API

    @property
    def device(self) -> Any:
        import torch

        return torch.device(self.device_name)

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            f"--model {self.adapter_name} (vamba-eval) implements generate_until only: loglikelihood "
            "(likelihood-scored multiple choice, perplexity) is not supported. Use a generate_until task "
            "(all the long-video tasks: videomme, mlvu_dev, mvbench, longvideobench_val_v, lvbench).")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError(f"--model {self.adapter_name} (vamba-eval): multi-round generation is not supported; "
                                  "use single-turn generate_until tasks")

    def generate_until(self, requests: list[Instance]) -> list[Any]:
        out = []
        for req in requests:
            out.append(self._answer(req))
        return out

    # ------------------------------------------------------------------ one request

    def _answer(self, req: Instance) -> Any:
        args = req.args
        if len(args) != 6 or not callable(args[2]):
            raise NotImplementedError(
                f"--model {self.adapter_name} (vamba-eval) takes lmms-eval 'simple' requests "
                "(context, gen_kwargs, doc_to_visual, doc_id, task, split); got a request of another shape "
                f"({len(args)} arguments) — chat-mode (doc_to_messages) tasks are not supported")
        context, gen_kwargs, doc_to_visual, doc_id, task, split = args
        gen_kwargs = dict(gen_kwargs or {})
        self._check_sampling(gen_kwargs)
        try:
            frames, times = self._frames(doc_to_visual(self.task_dict[task][split][doc_id]), task)
        except Exception as err:  # noqa: BLE001 - reported with the doc it belongs to
            return self._failed(task, doc_id, err)
        prompt = Prompt(user=str(context), system=self.options.system_prompt)
        max_new = int(gen_kwargs.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
        pred = self.adapter.generate([Request(f"{task}/{doc_id}", frames, times, prompt, max_new)])[0]
        text = _cut_at_stops(pred.text, gen_kwargs.get("until"))
        return _result(text, pred.prompt_tokens + pred.video_tokens, pred.output_tokens)

    def _frames(self, visuals: Any, task: str) -> tuple[np.ndarray, tuple[float, ...]]:
        if visuals is None or (isinstance(visuals, (list, tuple)) and len(visuals) == 0):
            raise NotImplementedError("text-only request (doc_to_visual gave nothing): the vamba-eval models need "
                                      "a video or images")
        visuals = list(visuals) if isinstance(visuals, (list, tuple)) else [visuals]
        if all(hasattr(v, "convert") and hasattr(v, "size") for v in visuals):  # PIL images: frames in order
            edges = self._edges(task)
            frames = _images_to_frames(visuals, *edges)
            return frames, tuple(float(i) for i in range(len(frames)))
        if len(visuals) != 1 or not isinstance(visuals[0], (str, os.PathLike)):
            kinds = ", ".join(sorted({type(v).__name__ for v in visuals}))
            raise NotImplementedError(f"{len(visuals)} visual(s) of type {kinds}: the vamba-eval lmms-eval model takes "
                                      "exactly one video path (or a list of PIL frames) per request")
        from vamba_eval.video import load_frames

        path = os.fspath(visuals[0])
        fps = self.options.frame_folder_fps
        if os.path.isdir(path) and fps is None:
            raise ValueError(f"{path} is a folder of frames; pass frame_folder_fps=N in --model_args (MVBench TVQA: 3)")
        decoded = load_frames(path, self.frame_spec(task), folder_fps=fps)
        return decoded.frames, tuple(decoded.times)

    def _edges(self, task: str) -> tuple[Optional[int], Optional[int]]:
        spec = self.frame_spec(task)
        return spec.max_edge, spec.min_edge

    def frame_spec(self, task: str) -> Any:
        """The frame spec for an lmms-eval task: model_args, else the vamba-eval task's paper setting."""
        from vamba_eval.interop.lmms_tasks import frame_defaults
        from vamba_eval.video import FrameSpec

        opts = self.options
        frames, sampler, max_edge, min_edge = frame_defaults(task) or (DEFAULT_FRAMES, "uniform_midpoint", None, None)
        explicit = "max_edge" in self._given() or "min_edge" in self._given()
        if explicit:
            max_edge, min_edge = opts.max_edge, opts.min_edge
        if max_edge is None and min_edge is None:
            max_edge = NO_EDGE
        return FrameSpec(num_frames=opts.max_frames_num or frames, sampler=opts.sampler or sampler,
                         max_edge=max_edge, min_edge=min_edge)

    def _given(self) -> set[str]:
        return {f.name for f in fields(self.options) if getattr(self.options, f.name) != f.default}

    def _check_sampling(self, gen: dict[str, Any]) -> None:
        sampling = bool(gen.get("do_sample")) or float(gen.get("temperature") or 0) > 0 or int(gen.get("num_beams") or 1) > 1
        if sampling and "sampling" not in self._warned:
            self._warned.add("sampling")
            log.warning("vamba-eval %s: sampling/beam settings %s ignored — the adapters decode greedily",
                        self.adapter_name, {k: gen.get(k) for k in ("do_sample", "temperature", "num_beams")})

    def _failed(self, task: str, doc_id: Any, err: BaseException) -> Any:
        message = f"{task} doc {doc_id}: {type(err).__name__}: {err}"
        if self.options.on_error == "empty" and not isinstance(err, NotImplementedError):
            log.error("vamba-eval: %s — answering '' (on_error=empty)", message)
            return _result("", 0, 0)
        hint = "" if isinstance(err, NotImplementedError) else \
            " (pass on_error=empty in --model_args to answer '' for such docs and go on)"
        raise RuntimeError(message + hint) from err


def _cut_at_stops(text: str, until: Any) -> str:
    stops = [until] if isinstance(until, str) else list(until or [])
    for stop in stops:
        if stop and stop in text:
            text = text[: text.index(stop)]
    return text


def _result(text: str, input_tokens: int, output_tokens: int) -> Any:
    try:  # lmms-eval >= 0.6 records per-sample token counts from a GenerationResult
        from lmms_eval.api.instance import GenerationResult, TokenCounts
    except ImportError:
        return text
    return GenerationResult(text=text, token_counts=TokenCounts(input_tokens=input_tokens, output_tokens=output_tokens))


class VambaLMMs(_VambaEvalLMMs):
    """``lmms-eval --model vamba``: vamba-eval's VAMBA (hybrid Mamba-2 / cross-attention)."""

    adapter_name = "vamba"


class Qwen2VLLMMs(_VambaEvalLMMs):
    """``lmms-eval --model vamba_eval_qwen2vl``: vamba-eval's Qwen2-VL adapter (transformers, sdpa)."""

    adapter_name = "qwen2vl"


MODELS = {"vamba": "VambaLMMs", "vamba_eval_qwen2vl": "Qwen2VLLMMs"}


def manifests() -> list[Any]:
    """The ``lmms_eval.models`` entry-point payload: one ModelManifest per model."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=mid, simple_class_path=f"{__name__}.{cls}") for mid, cls in MODELS.items()]


__all__ = ["VambaLMMs", "Qwen2VLLMMs", "PluginOptions", "PluginArgError", "manifests", "MODELS"]
