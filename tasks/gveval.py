"""TASK CARD — G-VEval (ztangaj/gveval): an LLM-judge captioning metric, not a QA set.

What is measured
    The model writes a one-paragraph caption of each video (prompt ``CAPTION_PROMPT``,
    ``max_new_tokens`` 64); a GPT-4o-class judge grades it 0–100. Modes ("settings"):
    reference-free (the video only), reference-only (the reference captions), combined (both);
    variant ACCR (videos only) grades Accuracy, Completeness, Conciseness, Relevance and their mean.

Release (our format — G-VEval ships no caption set for videos besides MSVD-Eval)
    ``<root>/gveval.jsonl``, one JSON object per line: ``id`` (unique), ``video`` (path relative to
    <root>; an image file is judged as an image), ``references`` (list of strings; may be empty for
    reference-free), optional ``candidate`` (a caption carried in ``meta``, unused by runs) and
    optional ``video_id`` (cluster key; default the video path).
    Or ``<root>/MSVD-Eval.json`` (the G-VEval repo file, 197 human-rated items) with the MSVD clips
    in ``<root>/YouTubeClips/<vname>`` (else ``<root>/<vname>``): the model captions those clips.
    References/candidates are whitespace-normalised (``' '.join(s.split())``, dataset.py).

Judge input (scorer.py/utils.py @fee3fd7, replicated)
    Video → 3 frames at ``np.linspace(0, N−1, 4, dtype=int)[:-1]``, each resized to 512×462 above a
    50-px white band labelled "Frame 1/2/3", side by side → one 1536×512 PNG, data URL, detail
    "high". Image → the file itself, detail "low". References joined as
    ``"'" + "'; '".join(refs)`` (opening quote, NO closing quote). Prompt placeholders
    ``{{Reference}}`` then ``{{Caption}}`` replaced; with a picture: one user turn [text, image];
    without one: the prompt as a system message. As in the authors' code, the picture is attached
    whenever the item has one — in reference-only mode too (their MSVD-Eval run did so).
    Sampling: temperature 1, top_p 1, logprobs, top_logprobs 5 (they used gpt-4o-2024-05-13).
    Prompts: our own paraphrase by default (records say "paraphrase:… not the G-VEval authors'
    text"); ``--judge-prompts DIR`` loads the authors' files (layout in ``_gveval_prompts``).

Score
    First reply token containing "$" (ACCR: α, β, ψ, δ, one per dimension); the NEXT token's top-5
    alternatives; keep those whose text is exactly "0"…"100"; renormalise their probabilities;
    score = Σ value·p. ACCR value = mean of the four. No marker / marker last / no integer
    alternative → ask again (3 attempts, like the authors' ``ignore = 3``), then the sample is a
    recorded ``JudgeReplyUnusable`` failure — never a made-up score. API errors are retried by the
    judge client (backoff), then ``JudgeUnavailable``. Judge replies are cached on disk per request
    and attempt (``vamba_eval.judge_cache``): a re-run replays the same samples of the temperature-1
    judge (reproducible, free); ``--no-judge-cache`` draws new ones.

Aggregation
    Mean score 0–100 over the scored samples (failed ones are left out, as the authors drop them)
    with a 95% CI clustered by video; breakdowns "mode" and, for ACCR, "dimension".

Choosing the mode: run-config keys ``gveval_mode`` / ``gveval_accr`` (reach the task through
``Judge.options``), else env ``VAMBA_EVAL_GVEVAL_MODE`` / ``VAMBA_EVAL_GVEVAL_ACCR``, else
reference-free, standard. Meta-evaluation on MSVD-Eval: ``meta_evaluate`` (Kendall τ vs humans).
Frames fed to the captioning model: 64 by default (no paper setting for video G-VEval; use --frames).

Known differences: frames are resized with PIL bilinear (cv2 INTER_LINEAR upstream) and labelled
with PIL's default font (cv2 Hershey upstream); the data URL says image/png (upstream labels its
PNG bytes image/jpeg); frequency/presence penalties are left at the API default 0 rather than
sent; API errors are retried with backoff (3 retries) where upstream loops forever on rate limits
and counts other errors against the same 3 attempts as unscorable replies. Vamba's paper reports
reference-free G-VEval on 500 COCO-2017 images.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence


from vamba_eval.aggregate import aggregate_mean, mean_of
from vamba_eval.judge import JudgeConfigError
from vamba_eval.run.process import JudgeUnavailable
from vamba_eval.task_api import DataError, FrameDefaults, PromptContext, Score, TaskDef
from vamba_eval.taskutil import check_mode, read_jsonl, require_folder, unique_ids
from vamba_eval.types import Extraction, Prompt, Sample, ScoredSample, VideoRef
from vamba_eval.video import VideoError

from vamba_eval.tasks._gveval_meta import load_msvd_eval, meta_evaluate
from vamba_eval.tasks._gveval_prompts import SETTING_FILES, load_template
from vamba_eval.tasks._gveval_score import (
    ACCR_MARKERS,
    judge_caption,
    join_references,
    normalise_text,
    visual_for,
)

NAME = "gveval"
TITLE = "G-VEval"
RELEASE_FILE = "gveval.jsonl"
MSVD_FILE = "MSVD-Eval.json"
LAYOUT = (f"<root>/{RELEASE_FILE} (JSON lines: id, video (relative path), references (list), optional "
          f"candidate) — or <root>/{MSVD_FILE} with videos in <root>/YouTubeClips/")
MODES = tuple(SETTING_FILES)  # reference-free, reference-only, combined
ALIASES = {"ref-free": "reference-free", "ref-only": "reference-only"}
DEFAULT_MODE = "reference-free"
MODE_ENV, ACCR_ENV = "VAMBA_EVAL_GVEVAL_MODE", "VAMBA_EVAL_GVEVAL_ACCR"
CAPTION_PROMPT = "Describe what happens in this video in one short paragraph."
RULE = "gveval_logprob_expectation"

# --------------------------------------------------------------------------- loading


def load(folder: Path) -> list[Sample]:
    root = require_folder(Path(folder), TITLE, LAYOUT)
    if (root / RELEASE_FILE).is_file():
        path = root / RELEASE_FILE
        return unique_ids(((_sample(root, rec, path, n), f"{path}: line {n}") for n, rec in read_jsonl(path)), "id")
    if (root / MSVD_FILE).is_file():
        return _msvd_samples(root)
    raise DataError(f"{root}: neither {RELEASE_FILE} nor {MSVD_FILE} found. Expected layout: {LAYOUT}")


def _sample(root: Path, rec: dict[str, Any], path: Path, line: int) -> Sample:
    where = f"{path}: line {line}"
    sid, video, refs = rec.get("id"), rec.get("video"), rec.get("references")
    if not isinstance(sid, (str, int)) or str(sid) == "":
        raise DataError(f"{where}: 'id' must be a non-empty string. Fix the record.")
    if not isinstance(video, str) or not video:
        raise DataError(f"{where}: 'video' must be a path relative to {root}. Fix the record.")
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise DataError(f"{where}: 'references' must be a list of strings ([] for reference-free only). Fix the record.")
    candidate = rec.get("candidate")
    if candidate is not None and not isinstance(candidate, str):
        raise DataError(f"{where}: 'candidate' must be a string when present. Fix the record.")
    meta: dict[str, Any] = {"references": tuple(normalise_text(r) for r in refs),
                            "video_id": str(rec.get("video_id") or video)}
    if candidate is not None:
        meta["candidate"] = normalise_text(candidate)
    return Sample(task=NAME, sample_id=str(sid), video=VideoRef(path=str(root / video)), question=CAPTION_PROMPT,
                  options=(), answer="", categories={}, meta=meta)


def _msvd_samples(root: Path) -> list[Sample]:
    clips = root / "YouTubeClips" if (root / "YouTubeClips").is_dir() else root
    out = []
    for item in load_msvd_eval(root / MSVD_FILE):
        meta = {"references": item.references, "video_id": item.vname, "candidate": item.candidate,
                "human_score": [list(row) for row in item.human]}
        out.append(Sample(task=NAME, sample_id=item.key, video=VideoRef(path=str(clips / item.vname)),
                          question=CAPTION_PROMPT, options=(), answer="", categories={}, meta=meta))
    return out


# --------------------------------------------------------------------------- prompt / scoring


def prompt(sample: Sample, ctx: PromptContext) -> Prompt:
    return Prompt(user=CAPTION_PROMPT)


def score(raw: str, sample: Sample, mode: str) -> Score:
    raise JudgeUnavailable("G-VEval is scored by an LLM judge; pass --judge-base-url/--judge-model")


def _truthy(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on", "accr")


def resolve_options(judge: Any) -> tuple[str, bool]:
    """(mode, accr): run-config keys via ``judge.options``, then the env variables, then defaults."""
    opts = getattr(judge, "options", None) or {}
    raw_mode = opts.get("gveval_mode") or os.environ.get(MODE_ENV) or DEFAULT_MODE
    mode = ALIASES.get(str(raw_mode), str(raw_mode))
    if mode not in MODES:
        raise JudgeConfigError(f"G-VEval mode {raw_mode!r}: expected one of {', '.join(MODES)}")
    accr = _truthy(opts["gveval_accr"]) if "gveval_accr" in opts else _truthy(os.environ.get(ACCR_ENV, ""))
    return mode, accr


def _prompts_dir(judge: Any) -> Optional[str]:
    return getattr(getattr(judge, "config", None), "prompts_dir", None)


def check_judge(judge: Any) -> dict[str, Any]:
    """Before a run: the mode is valid and the prompt files exist (DataError/JudgeConfigError now,
    not on every sample). Returns what will be used."""
    mode, accr = resolve_options(judge)
    sources = {kind: load_template(kind, mode, accr, _prompts_dir(judge)).source
               for kind in (("vid",) if accr else ("vid", "img"))}
    return {"mode": mode, "variant": "accr" if accr else "standard", "prompts": sources}


def _visual(sample: Sample) -> Any:
    try:
        return visual_for(sample.video.path)
    except (VideoError, OSError, ValueError) as err:
        raise JudgeUnavailable(f"G-VEval: cannot build the judge's picture of {sample.video.path}: {err}") from None


def judge_score(raw: str, sample: Sample, mode: str, judge: Any) -> Score:
    """Ask the judge about the model's caption; Score.value = G-VEval (0–100)."""
    check_mode(mode)
    setting, accr = resolve_options(judge)
    refs = list(sample.meta.get("references", ()))
    if setting != "reference-free" and not refs:
        raise JudgeUnavailable(f"{sample.sample_id}: {setting} G-VEval needs reference captions; this item has none")
    visual = _visual(sample)
    if accr and visual.kind != "vid":
        raise JudgeUnavailable(f"{sample.sample_id}: the ACCR variant is defined for videos only")
    template = load_template(visual.kind, setting, accr, _prompts_dir(judge))
    verdict = judge_caption(judge, template.fill(join_references(refs), normalise_text(raw or "")), visual, accr)
    variant = "accr" if accr else "standard"
    scores = {k: round(v, 6) for k, v in verdict.scores.items()}
    extracted = json.dumps({"mode": setting, "variant": variant, "scores": scores}, sort_keys=True)
    record = {"metric": TITLE, "mode": setting, "variant": variant, "prompt": template.source,
              "prompt_sha256": template.sha256, "judge": judge.describe(), "scores": scores, **verdict.record}
    flags = ("judge_retried",) if verdict.record["attempts"] > 1 else ()
    return Score(Extraction(extracted, RULE), correct=None, flags=flags, value=verdict.value, judge=record)


# --------------------------------------------------------------------------- aggregation


def _parsed(s: ScoredSample) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(s.extracted or "")
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _dimension_rows(scored: Sequence[ScoredSample]) -> dict[str, Any]:
    ok = [(s, p) for s in scored if s.score is not None and s.error is None and (p := _parsed(s))]
    rows = {}
    for dim, _ in ACCR_MARKERS:
        with_dim = [(s, p) for s, p in ok if dim in p.get("scores", {})]
        if with_dim:
            rows[dim] = mean_of([ScoredSample(s.sample_id, s.video_key, {}, None, None, score=p["scores"][dim])
                                 for s, p in with_dim], (0.0, 100.0))
    return rows


def aggregate(scored: Sequence[ScoredSample], mode: str) -> dict[str, Any]:
    check_mode(mode)
    modes = {}
    for s in scored:
        p = _parsed(s) if s.score is not None and s.error is None else None
        if p:
            modes.setdefault(f"{p.get('mode')} ({p.get('variant')})", []).append(s)
    extra = {"mode": {label: mean_of(group, (0.0, 100.0)) for label, group in sorted(modes.items())}}
    dims = _dimension_rows(scored)
    if dims:
        extra["dimension"] = dims
    notes = ["G-VEval 0-100: logprob-weighted expectation of the judge's score token (top-5, integers 0-100).",
             "Samples the judge could not score are left out of the mean and counted in n_failed."]
    if len(modes) > 1:
        notes.append("WARNING: samples were judged in different modes; the overall mean mixes them.")
    return aggregate_mean(scored, task=NAME, title=TITLE, scoring=mode, metric="gveval", n_total=len(scored),
                          extra_breakdowns=extra, bounds=(0.0, 100.0), notes=notes)


# --------------------------------------------------------------------------- demo


def write_demo(folder: Path, seed: int) -> Path:
    """Four synthetic videos (vamba_eval.synth) with references from the world's own captions."""
    from vamba_eval.synth._release import stream_rng, write_notice, write_text
    from vamba_eval.synth.render import render
    from vamba_eval.synth.world import caption, random_script, scene_caption

    folder = Path(folder)
    lines = []
    for v in range(4):
        rng = stream_rng(seed, 600, v)
        script = random_script(rng, int(rng.integers(8, 13)))
        rel = f"videos/demo{v + 1:02d}.mp4"
        render(script, folder / rel)
        rec: dict[str, Any] = {"id": f"demo{v + 1:02d}", "video": rel,
                               "references": [caption(script)] + [scene_caption(s) for s in script.scenes]}
        if v % 2 == 0:
            rec["candidate"] = scene_caption(script.scenes[0])  # a partial caption, for meta tests
        lines.append(json.dumps(rec, sort_keys=True, ensure_ascii=False))
    write_text(folder / RELEASE_FILE, "\n".join(lines) + "\n")
    write_notice(folder, TITLE, seed)
    return folder


TASK = TaskDef(
    name=NAME,
    title=TITLE,
    card=__doc__ or "",
    load=load,
    prompt=prompt,
    score=score,
    aggregate=aggregate,
    write_demo=write_demo,
    frames=FrameDefaults(num_frames=64, max_edge=480, min_edge=256, demo_num_frames=8),
    breakdowns=(),
    max_new_tokens=64,
    release_layout=LAYOUT,
    extra={"check_judge": check_judge, "meta_evaluate": meta_evaluate, "modes": MODES,
           "default_mode": DEFAULT_MODE, "mode_env": MODE_ENV, "accr_env": ACCR_ENV},
    judge_score=judge_score,
)

__all__ = ["TASK", "check_judge", "judge_score", "load", "meta_evaluate", "resolve_options", "write_demo"]
