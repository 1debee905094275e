"""One sample, start to finish: decode → prompt → model → official score → SampleRecord.

Shared by every executor (in-process now, Ray actors later), so that all of them produce
byte-identical records for the same sample. Bad input never becomes a score: any failure is a
recorded ``SampleError`` (``correct`` stays None and the sample counts in ``n_failed``).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any, Optional, Union

from vamba_eval.models.base import ModelAdapter
from vamba_eval.records import SampleError, SampleRecord
from vamba_eval.task_api import DataError, PromptContext, TaskDef, load_error
from vamba_eval.types import Prompt, Request, Sample
from vamba_eval.video import (DecodedVideo, FrameCache, FrameSpec, VideoError, VideoNotFound, check_inside_root,
                              load_frames)


class JudgeUnavailable(RuntimeError):
    """A judge-scored task ran without a judge, or the judge failed after its retries."""


@dataclass(frozen=True)
class WorkUnit:
    """A sample with the frame spec it is evaluated under and a cost estimate (for scheduling)."""

    task: str
    sample: Sample
    spec: FrameSpec
    data_root: str
    cost: float = 1.0

    @property
    def key(self) -> tuple[str, str]:
        return (self.task, self.sample.sample_id)


def decode(unit: WorkUnit, cache: Optional[FrameCache]) -> DecodedVideo:
    """The sample's frames. Refused first: a record the loader marked bad (``DataError``), and a
    video path outside the data root (``VideoOutsideDataRoot``, nothing read)."""
    ref = unit.sample.video
    bad = load_error(unit.sample)
    if bad is not None:
        raise DataError(bad)
    if unit.data_root:
        check_inside_root(ref.path, unit.data_root)
    return load_frames(ref.path, unit.spec, ref.start, ref.end, cache, folder_fps=ref.fps)


def prompt_hash(prompt: Prompt) -> str:
    inter = "\x1e".join(f"{k}:{text}" for k, text in prompt.interleave)
    blob = "\x1f".join([prompt.system or "", prompt.user, prompt.assistant_prefix, inter])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def prompt_text(prompt: Prompt) -> str:
    """The prompt as recorded for the report: interleaved subtitles marked with their frame position."""
    inter = "".join(f"[after frame {k}] {text}\n" for k, text in prompt.interleave)
    return inter + prompt.user


def _rel(path: str, root: str) -> str:
    """``path`` relative to the data root, lexically (no link is followed: a hostile link or a link
    loop must not break the record); as given when it lies outside."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root)) if root else path
    return path if rel == ".." or rel.startswith(".." + os.sep) else rel


def base_record(unit: WorkUnit) -> dict[str, Any]:
    s = unit.sample
    return {"task": unit.task, "sample_id": s.sample_id, "video": _rel(s.video.path, unit.data_root),
            "video_key": s.video_key, "categories": {k: list(v) for k, v in s.categories.items()},
            "gold": s.answer, "options": list(s.options)}


def error_record(unit: WorkUnit, err: BaseException, **extra: Any) -> SampleRecord:
    message = str(err) or repr(err)
    hint = unit.sample.meta.get("video_not_found_hint")
    if isinstance(err, VideoNotFound) and hint:  # e.g. MVBench's NTU RGB+D videos the user must fetch
        message = f"{message} {hint}"
    return SampleRecord(**base_record(unit), **extra, error=SampleError(type=type(err).__name__, message=message))


def score_fields(task: TaskDef, sample: Sample, text: str, mode: str, judge: Any = None) -> dict[str, Any]:
    """The scorer's verdict as record fields (used at run time and by `vamba-eval score`)."""
    if task.judge_score is not None:
        if judge is None:
            raise JudgeUnavailable(f"task {task.name} is scored by an LLM judge and none is configured; "
                                   "pass --judge-base-url/--judge-model (key from $OPENAI_API_KEY)")
        verdict = task.judge_score(text, sample, mode, judge)
    else:
        verdict = task.score(text, sample, mode)
    return {"extracted": verdict.extraction.answer, "extraction_rule": verdict.extraction.rule,
            "correct": verdict.correct, "score": verdict.value,
            "judge": dict(verdict.judge) if verdict.judge is not None else None,
            "unparsed": verdict.extraction.answer is None,
            "flags": sorted(verdict.flags) + ([f"fallback:{verdict.extraction.fallback}"]
                                              if verdict.extraction.fallback else [])}


def run_unit(unit: WorkUnit, task: TaskDef, decoded: Union[DecodedVideo, BaseException], model: ModelAdapter,
             *, use_subtitles: bool, scoring: str, max_new_tokens: int, judge: Any = None) -> SampleRecord:
    """Everything after decoding; ``decoded`` may be the decode failure, which is recorded."""
    if isinstance(decoded, BaseException):
        if isinstance(decoded, (VideoError, DataError, OSError, ValueError)):
            return error_record(unit, decoded)
        raise decoded
    frames = {"frame_indices": list(decoded.indices), "frame_times": [round(t, 6) for t in decoded.times],
              "frame_size": [int(decoded.frames.shape[2]), int(decoded.frames.shape[1])]}
    try:
        if use_subtitles and unit.sample.subtitles and unit.data_root:  # read only when used
            check_inside_root(unit.sample.subtitles, unit.data_root, what="subtitle file")
        prompt = task.prompt(unit.sample, PromptContext(tuple(decoded.times), use_subtitles))
    except Exception as err:  # noqa: BLE001 - a bad record must not end the run
        return error_record(unit, err, **frames)
    req = Request(unit.sample.sample_id, decoded.frames, tuple(decoded.times), prompt, max_new_tokens)
    t0 = time.perf_counter()
    try:
        pred = model.generate([req])[0]
    except (RuntimeError, ValueError) as err:  # CUDA OOM, bad frames …: recorded, the run goes on
        return error_record(unit, err, **frames, prompt=prompt_text(prompt), prompt_hash=prompt_hash(prompt))
    timings = {**{k: round(v, 6) for k, v in pred.timings.items()}, "model_s": round(time.perf_counter() - t0, 6)}
    try:
        verdict = score_fields(task, unit.sample, pred.text, scoring, judge)
    except JudgeUnavailable as err:
        return error_record(unit, err, **frames, prompt=prompt_text(prompt), prompt_hash=prompt_hash(prompt),
                            response=pred.text)
    return SampleRecord(
        **base_record(unit), **frames, prompt=prompt_text(prompt), prompt_hash=prompt_hash(prompt), response=pred.text,
        **verdict, timings=timings,
        tokens={"prompt": pred.prompt_tokens, "video": pred.video_tokens, "output": pred.output_tokens},
        peak_memory_bytes=pred.peak_memory_bytes,
    )
