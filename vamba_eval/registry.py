"""Name → task / model lookups with did-you-mean errors (lm-evaluation-harness style)."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Callable, Iterable

from vamba_eval.task_api import TaskDef


class UnknownNameError(KeyError):
    """An unknown task or model name; the message suggests the closest known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def did_you_mean(kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return UnknownNameError(f"Unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(known)}.")


def task_names() -> list[str]:
    import vamba_eval.tasks as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def get_task(name: str) -> TaskDef:
    names = task_names()
    if name not in names:
        raise did_you_mean("task", name, names)
    module = importlib.import_module(f"vamba_eval.tasks.{name}")
    task = getattr(module, "TASK", None)
    if not isinstance(task, TaskDef):
        raise TypeError(f"vamba_eval.tasks.{name} defines no TASK = TaskDef(...)")
    return task


def _vamba() -> Callable:
    from vamba_eval.models.vamba_adapter import VambaAdapter

    return VambaAdapter


def _qwen2vl() -> Callable:
    from vamba_eval.models.qwen2vl_adapter import Qwen2VLAdapter

    return Qwen2VLAdapter


def _hf_video() -> Callable:
    from vamba_eval.models.hf_video_adapter import HFVideoAdapter

    return HFVideoAdapter


MODELS: dict[str, tuple[str, Callable[[], Callable]]] = {
    "vamba": ("VAMBA hybrid Mamba-2/cross-attention LMM (ours; bundled tiny model without --model-path)", _vamba),
    "qwen2vl": ("Qwen2-VL baseline (transformers Qwen2VLForConditionalGeneration, sdpa)", _qwen2vl),
    "hf-video": ("Any transformers video LMM taking video through its processor's chat template "
                 "(e.g. Qwen2.5-VL, LLaVA-OneVision); needs --model-path", _hf_video),
}


def model_names() -> list[str]:
    return sorted(MODELS)


def get_model_factory(name: str) -> Callable:
    if name not in MODELS:
        raise did_you_mean("model", name, MODELS)
    return MODELS[name][1]()
