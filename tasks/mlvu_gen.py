"""TASK CARD — MLVU generation (JUNJIE99/MLVU): sub-scene captioning (201) + video summary (217), judged by an LLM.

Release (layouts in ``tasks/_mlvu_common.py``)
    dev: ``json/8_sub_scene.json``, ``json/9_summary.json``; videos ``video/8_sub_scene/<file>`` and
    ``video/9_summary/<file>`` (``video/subPlot/``, ``video/summary/`` as in the authors'
    ``videochat2/open_bench.py`` also found). test: ``test-ground-truth/test_ssc_gt.json`` and
    ``test_vs_gt.json``, videos ``video/<file>``. Record: video, duration, question, answer (the
    reference text), question_type (subPlot | summary); sub-scene items add ``scoring_points`` (list;
    required — the judge grades against them). Sample: ``sample_id`` "<n>_<task>_<index>" (dev) or
    question_id (test, else "<file stem>_<index>"); ``answer`` "" (not a letter task); ``categories``
    {"task": (sub_scene|summary,), "split": …}; ``meta`` video_id, reference, scoring_points, duration.

Prompt (``videochat2/open_bench.py``): system "Carefully watch this video and pay attention to every
    detail. Based on your observations, answer the given questions."; user = the question; no
    assistant prefix; up to 1,000 new tokens.

Judge (``generation_evaluation/evaluate_ssc.py``, ``evaluation/generation_evaluation/evaluate_summary.py``)
    gpt-4-turbo, temperature 0, one system (rubric) + one user message. Sub-scene: the user message
    carries the question (newlines removed), the scoring points (Python list repr; the script looks
    them up by question text in a separate file, we use each record's own) and the response;
    the judge grades each point 1/3/5 and averages (accuracy 1–5) and grades relevance 1–5. Summary:
    the reference and the response; completeness 1–5 and reliability 1–5. The authors' prompt text is
    NOT shipped: by default a labelled vamba-eval paraphrase of their rubric is sent; their text is
    read from ``<folder>/mlvu/{sub_scene,summary}_{system,user}.txt`` when a folder is configured (the
    run config's ``judge_prompts`` = ``judge.config.prompts_dir``, else $VAMBA_EVAL_JUDGE_PROMPTS; a
    configured folder without those files is a recorded JudgeUnavailable, never a silent fallback).
    User templates use the placeholders {question} {scoring_points} {answer} {pred}, replaced
    literally (other braces kept).
    Which prompt was used (label + sha256) is stored in every sample's ``judge`` record.

Score parsing (``generation_evaluation/calculate.py`` / ``calculate_sum.py`` ``extract_scores``, step for step)
    for each key (score_accuracy, score_relevance | score_completeness, score_reliability): first
    occurrence in the reply, number = text from 2 characters after the next ":" up to the next ",",
    ``float()``; a missing key is skipped, so found scores fill the dimensions IN ORDER (a reply with
    only the relevance score counts it as accuracy — kept). Item score = sum of the found scores
    (2–10); missing ones count 0 — the official "failed judge items count 0" — and are flagged
    ``judge_missing_scores_counted_0``. A number ``float()`` rejects crashes calculate.py; here it is
    flagged ``judge_parse_error`` and counts 0. The judge client failing after its retries raises
    ``JudgeUnavailable``: a recorded sample error (the official script retries until it succeeds).

Aggregation: per task the mean item score (2–10; = mean accuracy + mean relevance of calculate.py);
    ``overall`` = G-Avg = unweighted mean of the two task scores; breakdowns ``task`` and ``dimension``
    (means per 1–5 dimension, missing = 0). Stderr clustered by video. lmms-eval has no MLVU
    generation tasks: its mode scores identically.

Vamba paper setting: 512 frames, longest edge 480, shortest edge 256.
"""

from __future__ import annotations

import math

import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from vamba_eval.records import Estimate, TaskResult
from vamba_eval.run.process import JudgeUnavailable
from vamba_eval.stats import macro_estimate, mean_estimate
from vamba_eval.task_api import DataError, FrameDefaults, PromptContext, Score, TaskDef
from vamba_eval.taskutil import check_mode, require_fields, unique_ids
from vamba_eval.types import Extraction, Prompt, Sample, ScoredSample, VideoRef

from ._mlvu_common import (
    GEN_TASKS, LAYOUT, TEST_GEN_FILES, TEST_VIDEO_DIRS, Release, duration_of, find_release, read_json_list,
    require_text, video_path, where,
)  # fmt: skip
from ._mlvu_judge_prompts import PARAPHRASE, PARAPHRASE_LABEL

NAME = "mlvu_gen"
TITLE = "MLVU generation"
SYSTEM = ("Carefully watch this video and pay attention to every detail. Based on your observations, "
          "answer the given questions.")
DIMENSIONS = {"sub_scene": ("accuracy", "relevance"), "summary": ("completeness", "reliability")}
OFFICIAL_FOLDERS = {"sub_scene": "subPlot", "summary": "summary"}  # open_bench.py data_list
PROMPTS_ENV = "VAMBA_EVAL_JUDGE_PROMPTS"
JUDGE_MAX_TOKENS = 4096  # the official call sets none (gpt-4-turbo's output limit)

# --------------------------------------------------------------------------- loading


def load(folder: Path) -> list[Sample]:
    """Samples of the generation tasks of a local MLVU release (dev or test)."""
    release = find_release(Path(folder), TITLE)
    if release.split == "dev":
        files = [(release.json_path(stem), label, stem, (f"video/{stem}", f"video/{OFFICIAL_FOLDERS[label]}"))
                 for stem, label in GEN_TASKS.items()]
    else:
        files = [(release.json_path(name), label, Path(name).stem, TEST_VIDEO_DIRS) for name, label in TEST_GEN_FILES.items()]
    missing = [str(path) for path, *_ in files if not path.is_file()]
    if missing:
        raise DataError(f"{', '.join(missing)}: missing (G-Avg needs both generation tasks). Expected layout: {LAYOUT}")
    return unique_ids((pair for spec in files for pair in _read(release, *spec)), "sample id")


def _read(release: Release, path: Path, label: str, stem: str, folders: Sequence[str]) -> Iterator[tuple[Sample, str]]:
    for i, rec in enumerate(read_json_list(path)):
        at = where(i, rec)
        require_fields(rec, ("video", "question", "answer") + (("scoring_points",) if label == "sub_scene" else ()), path, at)
        video = require_text(rec, "video", path, at)
        points = rec.get("scoring_points")
        if label == "sub_scene" and (not isinstance(points, list) or not all(isinstance(p, str) for p in points) or not points):
            raise DataError(f"{path}: {at}: 'scoring_points' must be a non-empty list of strings, found {points!r}. "
                            "Fix the record.")
        meta: dict[str, Any] = {
            "video_id": f"{stem}/{video}" if release.split == "dev" else video, "split": release.split,
            "reference": require_text(rec, "answer", path, at), "question_type": str(rec.get("question_type", label)),
            "scoring_points": tuple(points or ()),
        }
        duration = duration_of(rec, path, at)
        if duration is not None:
            meta["duration"] = duration
        sid = str(rec["question_id"]) if rec.get("question_id") is not None else f"{stem}_{i}"
        sample = Sample(task=NAME, sample_id=sid, video=VideoRef(path=str(video_path(release, video, folders))),
                        question=require_text(rec, "question", path, at), options=(), answer="",
                        categories={"task": (label,), "split": (release.split,)}, meta=meta)
        yield sample, f"{path}: {at}"


def prompt(sample: Sample, ctx: PromptContext) -> Prompt:
    return Prompt(user=sample.question, system=SYSTEM)


# --------------------------------------------------------------------------- judge prompts


@dataclass(frozen=True)
class JudgePrompt:
    """A rubric (system) and a user template, with where it came from."""

    system: str
    user: str
    source: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(f"{self.system}\x1f{self.user}".encode("utf-8")).hexdigest()[:16]


def prompts_folder(judge: Any) -> Optional[Path]:
    """The user's folder of authors' judge prompts: ``judge.config.prompts_dir`` (the run config's
    ``judge_prompts``, as G-VEval reads it), else ``judge.prompts_dir``, else $VAMBA_EVAL_JUDGE_PROMPTS."""
    folder = (getattr(getattr(judge, "config", None), "prompts_dir", None) or getattr(judge, "prompts_dir", None)
              or os.environ.get(PROMPTS_ENV))
    return Path(folder).expanduser() if folder else None


def judge_prompt(label: str, judge: Any = None) -> JudgePrompt:
    """The authors' prompt from ``<folder>/mlvu/`` when a prompts folder is configured, else our labelled
    paraphrase. A configured folder without the two files is JudgeUnavailable (a recorded sample error)."""
    folder = prompts_folder(judge)
    if folder is None:
        system, user = PARAPHRASE[label]
        return JudgePrompt(system, user, PARAPHRASE_LABEL)
    texts = []
    for part in ("system", "user"):
        path = folder / "mlvu" / f"{label}_{part}.txt"
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            raise JudgeUnavailable(f"{path}: cannot read the MLVU judge prompt ({type(err).__name__}). Put the authors' "
                                   f"{label}_system.txt and {label}_user.txt in {folder / 'mlvu'}, or drop "
                                   "--judge-prompts to use the built-in paraphrase.") from None
    return JudgePrompt(texts[0], texts[1], f"file:{folder / 'mlvu'}/{label}_{{system,user}}.txt")


def judge_messages(jp: JudgePrompt, raw: str, sample: Sample) -> list[dict[str, str]]:
    """evaluate_ssc.py / evaluate_summary.py message shape with the template's placeholders filled."""
    fill = {
        "{question}": sample.question.replace("\n", ""),
        "{scoring_points}": str(list(sample.meta.get("scoring_points", ()))),
        "{answer}": str(sample.meta.get("reference", "")),
        "{pred}": raw.strip(),
    }
    user = jp.user
    for key, value in fill.items():
        user = user.replace(key, value)
    return [{"role": "system", "content": jp.system}, {"role": "user", "content": user}]


# --------------------------------------------------------------------------- scoring


def extract_scores(text: str, keys: Sequence[str]) -> list[float]:
    """calculate.py ``extract_scores``, step for step (ValueError where the original would crash)."""
    scores = []
    for key in keys:
        start_index = text.find(key)
        if start_index == -1:
            continue
        start_number_index = text.find(":", start_index) + 2
        end_number_index = text.find(",", start_number_index)
        value = float(text[start_number_index:end_number_index])
        if not math.isfinite(value):  # float() takes "nan"/"inf": one such reply would make the task mean NaN
            raise ValueError(f"{key} score {value!r} is not a finite number")
        scores.append(value)
    return scores


def parse_verdict(text: str, label: str) -> tuple[dict[str, float], tuple[str, ...]]:
    """{dimension: score} filled in order as calculate.py does, and the flags of a (partly) failed parse."""
    dims = DIMENSIONS[label]
    try:
        scores = extract_scores(text, [f"score_{d}" for d in dims])
    except ValueError:
        return {}, ("judge_parse_error", "judge_missing_scores_counted_0")
    found = dict(zip(dims, scores))
    flags = ["judge_missing_scores_counted_0"] if len(found) < len(dims) else []
    if any(not 1.0 <= v <= 5.0 for v in found.values()):
        flags.append("judge_score_out_of_range")
    return found, tuple(flags)


def judge_score(raw: str, sample: Sample, mode: str, judge: Any) -> Score:
    """Ask the judge (temperature 0) and score the reply; JudgeUnavailable from the client propagates."""
    check_mode(mode)
    label = sample.categories["task"][0]
    jp = judge_prompt(label, judge)
    reply = judge.chat(judge_messages(jp, raw or "", sample), temperature=0, max_tokens=JUDGE_MAX_TOKENS)
    found, flags = parse_verdict(reply.text, label)
    extracted = ";".join(f"{k}={v:g}" for k, v in found.items()) or None
    record = {"prompt_source": jp.source, "prompt_sha256": jp.sha256, "scores": found, "reply": reply.to_record()}
    return Score(Extraction(extracted, "mlvu_calculate_py"), correct=None, flags=flags,
                 value=float(sum(found.values())), judge=record)


def score(raw: str, sample: Sample, mode: str) -> Score:
    """No judge, no score: the runner checks first; called directly this is JudgeUnavailable too."""
    check_mode(mode)
    raise JudgeUnavailable("MLVU generation is scored by an LLM judge; pass --judge-base-url/--judge-model")


# --------------------------------------------------------------------------- aggregation


def _dims_of(extracted: Optional[str]) -> dict[str, float]:
    pairs = (item.split("=", 1) for item in (extracted or "").split(";") if "=" in item)
    return {k: float(v) for k, v in pairs}


def _clip(est: Estimate, high: float) -> Estimate:
    if est.ci95 is None:
        return est
    return est.model_copy(update={"ci95": [max(0.0, est.ci95[0]), min(high, est.ci95[1])]})


def _breakdowns(counted: Sequence[ScoredSample]) -> tuple[dict[str, Estimate], dict[str, Estimate]]:
    """Per task: mean item score (0–10, failed parses count 0); per task/dimension: mean 1–5 score."""
    labels = sorted({lab for s in counted for lab in s.categories.get("task", ())})
    tasks, dims = {}, {}
    for label in labels:
        group = [s for s in counted if label in s.categories.get("task", ())]
        clusters = [s.video_key for s in group]
        tasks[label] = _clip(mean_estimate([float(s.score) for s in group], clusters), 10.0)
        for d in DIMENSIONS.get(label, ()):
            values = [_dims_of(s.extracted).get(d, 0.0) for s in group]
            dims[f"{label}/{d}"] = _clip(mean_estimate(values, clusters), 5.0)
    return tasks, dims


def aggregate(scored: Sequence[ScoredSample], mode: str) -> dict[str, Any]:
    mode = check_mode(mode)
    counted = [s for s in scored if s.error is None and s.score is not None]
    tasks, dims = _breakdowns(counted)
    flags = Counter(f for s in scored for f in s.flags)
    notes = [f"overall = G-Avg: unweighted mean of the {len(tasks)} task scores (each 2–10: the two 1–5 judge "
             "scores summed, averaged over the task's items)",
             f"{flags['judge_missing_scores_counted_0']} judge replies without both scores counted 0 for the missing ones "
             f"(calculate.py); {flags['judge_parse_error']} unparseable numbers (calculate.py would crash) counted 0"]
    if mode == "lmms-eval":
        notes.append("lmms-eval has no MLVU generation tasks; scored with the official rules")
    result = TaskResult(
        task=NAME, title=TITLE, metric="G-Avg", scoring=mode, overall=macro_estimate(list(tasks.values()), bounds=(0.0, 10.0)),
        breakdowns={"task": tasks, "dimension": dims}, n=len(scored), n_scored=len(counted),
        n_failed=sum(1 for s in scored if s.error is not None), n_unparsed=sum(1 for s in counted if s.extracted is None),
        n_flagged={k: flags[k] for k in sorted(flags)}, notes=notes,
    )
    return result.model_dump(mode="json")


def write_demo(folder: Path, seed: int) -> Path:
    from vamba_eval.synth.mlvu import TRAIN_VIDEOS_PER_TASK, write_release

    return write_release(folder, seed=seed, part="gen", videos_per_task=TRAIN_VIDEOS_PER_TASK)  # judge-scored


TASK = TaskDef(
    name=NAME,
    title=TITLE,
    card=__doc__ or "",
    load=load,
    prompt=prompt,
    score=score,
    aggregate=aggregate,
    write_demo=write_demo,
    frames=FrameDefaults(num_frames=512, max_edge=480, min_edge=256),
    breakdowns=("task", "dimension"),
    max_new_tokens=1000,
    hub_id="MLVU/MVLU",
    release_layout=LAYOUT,
    extra={"judge_model": "gpt-4-turbo", "judge_temperature": 0, "prompts_env": PROMPTS_ENV},
    judge_score=judge_score,
)
