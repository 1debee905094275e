"""MSVD-Eval: the human-rated set shipped with G-VEval, and the meta-evaluation on it
(Kendall τ of G-VEval against human ACCR ratings, as the authors' ``correlation.py``).

``MSVD-Eval.json`` (ztangaj/gveval, 197 items) is ONE JSON object keyed by item id ("vid1301")::

    {"vid1301": {"vname": "eyhzdC936uk_15_27.avi",           # file in MSVD's YouTubeClips/
                 "ref": ["a boy playing with dog", …],        # reference captions
                 "candidate": "The person in the video …",    # the caption that was rated
                 "human_score": [[4, 3, 4, 5, 4.0],           # annotator 1: Acc, Com, Con, Rel, Avg (1–5)
                                 [4, 3, 4, 4, 3.75]]}, …}     # annotator 2
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from vamba_eval.run.process import JudgeUnavailable
from vamba_eval.task_api import DataError
from vamba_eval.video import VideoError

from vamba_eval.tasks._gveval_prompts import SETTING_FILES, PromptTemplate, load_template
from vamba_eval.tasks._gveval_score import judge_caption, join_references, normalise_text, video_visual

DIMENSIONS = ("accuracy", "completeness", "conciseness", "relevance", "average")  # human_score columns
GVEVAL_FOR = {"accuracy": "accuracy", "completeness": "completeness", "conciseness": "conciseness",
              "relevance": "relevance", "average": "mean"}  # ACCR verdict key per human column


@dataclass(frozen=True)
class MsvdItem:
    key: str
    vname: str
    references: tuple[str, ...]
    candidate: str
    human: tuple[tuple[float, ...], ...]  # [annotator][dimension], dimension order = DIMENSIONS


def _item(path: Path, key: str, rec: Any) -> MsvdItem:
    where = f"{path}: item {key!r}"
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected an object with vname, ref, candidate, human_score. Re-download MSVD-Eval.json.")
    missing = [f for f in ("vname", "ref", "candidate", "human_score") if rec.get(f) is None]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(map(repr, missing))}. Re-download MSVD-Eval.json.")
    refs = rec["ref"]
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise DataError(f"{where}: 'ref' must be a list of strings. Re-download MSVD-Eval.json.")
    human = rec["human_score"]
    ok = isinstance(human, list) and human and all(
        isinstance(row, list) and len(row) == len(DIMENSIONS)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row) for row in human)
    if not ok:
        raise DataError(f"{where}: 'human_score' must be a list of [Acc, Com, Con, Rel, Avg] number lists "
                        "(one per annotator). Re-download MSVD-Eval.json.")
    return MsvdItem(str(key), str(rec["vname"]), tuple(normalise_text(r) for r in refs),
                    normalise_text(rec["candidate"]), tuple(tuple(float(v) for v in row) for row in human))


def load_msvd_eval(path: Path) -> list[MsvdItem]:
    """Items of an MSVD-Eval.json file, in file order; refs/candidate whitespace-normalised (dataset.py)."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise DataError(f"{path}: cannot read MSVD-Eval file ({err.strerror}). Check the path.") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON ({err.msg}, line {err.lineno}). Re-download MSVD-Eval.json.") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object keyed by item id (MSVD-Eval.json layout).")
    return [_item(path, key, rec) for key, rec in data.items()]


def _score_item(item: MsvdItem, judge: Any, template: PromptTemplate, accr: bool,
                video_root: Optional[Path]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": item.key, "vname": item.vname,
                           "human_mean": [sum(col) / len(col) for col in zip(*item.human)]}
    try:
        visual = video_visual(str(video_root / item.vname)) if video_root is not None else None
        prompt = template.fill(join_references(item.references), item.candidate)
        verdict = judge_caption(judge, prompt, visual, accr)
    except (JudgeUnavailable, VideoError, OSError, ValueError) as err:
        out["error"] = f"{type(err).__name__}: {err}"
        return out
    out["scores"] = verdict.scores
    out["attempts"] = verdict.record["attempts"]
    return out


def _tau(x: Sequence[float], y: Sequence[float], variant: str) -> tuple[Optional[float], Optional[float]]:
    from scipy.stats import kendalltau

    if len(x) < 2:
        return None, None
    res = kendalltau(x, y, variant=variant)
    tau, p = float(res.statistic), float(res.pvalue)
    return (None if math.isnan(tau) else tau), (None if math.isnan(p) else p)


def correlations(items: Sequence[dict[str, Any]], raw: dict[str, MsvdItem], accr: bool) -> dict[str, Any]:
    """Per human dimension: τ-b against the annotators' MEAN, and the authors' protocol (each
    annotator's rating a separate pair, the G-VEval score repeated): τ-b and τ-c."""
    ok = [it for it in items if "scores" in it]
    out: dict[str, Any] = {}
    for d, dim in enumerate(DIMENSIONS):
        key = GVEVAL_FOR[dim] if accr else ("score" if dim == "average" else None)
        if key is None:
            continue
        g = [it["scores"][key] for it in ok]
        h = [it["human_mean"][d] for it in ok]
        g_rep = [it["scores"][key] for it in ok for _ in raw[it["id"]].human]
        h_rep = [row[d] for it in ok for row in raw[it["id"]].human]
        tau_b, p = _tau(g, h, "b")
        out[dim] = {"n": len(ok), "tau_b": tau_b, "p_value": p,
                    "tau_b_per_annotator": _tau(g_rep, h_rep, "b")[0],
                    "tau_c_per_annotator": _tau(g_rep, h_rep, "c")[0], "n_pairs_per_annotator": len(g_rep)}
    return out


def meta_evaluate(msvd_eval_file: Path, judge: Any, mode: str = "reference-only", *, accr: bool = True,
                  video_root: Optional[Path] = None, limit: Optional[int] = None, workers: int = 4) -> dict[str, Any]:
    """Score every MSVD-Eval candidate with G-VEval and correlate with the human ratings.

    The authors' run: ``mode="reference-only"``, ACCR, videos attached (``video_root`` = MSVD's
    YouTubeClips/). Without ``video_root`` the judge gets text only (their no-image path), which
    ``reference-free`` cannot work with. Items the judge could not score are listed under
    ``failures`` and left out of the correlations (as the authors drop them)."""
    if mode not in SETTING_FILES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(SETTING_FILES)}")
    if mode != "reference-only" and video_root is None:
        raise ValueError(f"{mode} G-VEval looks at the video: pass video_root (MSVD's YouTubeClips/ folder)")
    items = load_msvd_eval(Path(msvd_eval_file))[:limit]
    root = Path(video_root).expanduser() if video_root is not None else None
    template = load_template("vid", mode, accr, getattr(getattr(judge, "config", None), "prompts_dir", None))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        scored = list(pool.map(lambda it: _score_item(it, judge, template, accr, root), items))
    failures = [{"id": it["id"], "error": it["error"]} for it in scored if "error" in it]
    return {"file": str(msvd_eval_file), "mode": mode, "variant": "accr" if accr else "standard",
            "video_root": str(root) if root else None, "judge": judge.describe(), "prompt": template.source,
            "n_items": len(items), "n_scored": len(items) - len(failures), "n_failed": len(failures),
            "failures": failures, "correlations": correlations(scored, {i.key: i for i in items}, accr),
            "items": scored,
            "notes": ["tau_b: Kendall tau-b against the mean of the annotators (scipy.stats.kendalltau).",
                      "*_per_annotator: the authors' correlation.py protocol (each annotator a separate pair); "
                      "they print 100 x tau."]}
