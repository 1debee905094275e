"""Which release sample is an lmms-eval doc? Official sample ids for lmms-eval's per-sample logs.

lmms-eval numbers docs by their row in ITS copy of the dataset (``doc_id``) and, from 0.7 on, does
not log the doc itself. Per vamba-eval task:

* videomme — ``question_id`` is in the logged ``videomme_perception_score`` (or the doc): the official id.
* longvideobench / longvideobench_test — the record ``id`` (``lvb_acc.id`` or the doc).
* mvbench — one lmms-eval task per subtask, rows in the order of ``json/<subtask>.json``:
  ``<subtask>_<doc_id:03d>``, exactly our id.
* lvbench, mlvu — no id in the log (lmms-eval/LVBench is a repack; MLVU_dev has no ids, and its
  rows are not in the official json order): matched by CONTENT against the release — the sample whose
  question text and option texts all occur in the logged prompt (``input``), then whose gold equals
  the logged ``target``, then the one at the doc's position in the release.

Every direct id is checked the same way (the id exists in the release and its question is in the
prompt), so a log from another release revision is reported instead of silently mis-mapped.
"""

from __future__ import annotations

import re
from typing import Any, Optional, Sequence

from vamba_eval.interop.lmms_tasks import LmmsTask
from vamba_eval.types import Sample, VideoRef

OPTION_PREFIX = re.compile(r"^\s*(?:\(([A-Z])\)|([A-Z])[.:])\s*")
VIDEOMME_OPTION = re.compile(r"^[A-D]\. ")


def norm(text: Any) -> str:
    """Whitespace-collapsed text (prompt builders differ in line breaks and spacing)."""
    return " ".join(str(text or "").split())


def option_texts(sample: Sample) -> list[str]:
    return [norm(OPTION_PREFIX.sub("", o, count=1)) for o in sample.options]


def _metric_payload(log: dict[str, Any], key: str) -> dict[str, Any]:
    value = log.get(key)
    return value if isinstance(value, dict) else {}


def direct_id(info: LmmsTask, log: dict[str, Any]) -> Optional[str]:
    """The official sample id when the log (or its doc, before lmms-eval 0.7) carries it."""
    doc = log.get("doc") if isinstance(log.get("doc"), dict) else {}
    if info.ours == "videomme":
        qid = _metric_payload(log, "videomme_perception_score").get("question_id") or doc.get("question_id")
        return str(qid) if qid else None
    if info.ours in ("longvideobench", "longvideobench_test"):
        rid = _metric_payload(log, "lvb_acc").get("id") or doc.get("id")
        return str(rid) if rid else None
    if info.ours == "mvbench" and info.subtask and isinstance(log.get("doc_id"), int):
        return f"{info.subtask}_{log['doc_id']:03d}"
    if info.ours == "lvbench" and doc.get("uid") is not None:
        return str(doc["uid"])
    if info.ours == "mlvu" and doc.get("question_id"):
        return str(doc["question_id"])
    return None


def _target_ok(sample: Sample, target: Any) -> bool:
    """Does lmms-eval's logged target agree with the sample's gold (letter, 0-based index or text)?"""
    text = norm(target)
    if not text or not sample.answer:
        return True
    if len(text) == 1 and text.isalpha():
        return text.upper() == sample.answer
    if text.isdigit():
        return chr(ord("A") + int(text)) == sample.answer
    idx = ord(sample.answer) - ord("A")
    opts = option_texts(sample)
    return 0 <= idx < len(opts) and opts[idx] == text


class ReleaseIndex:
    """A release's samples, for finding the one an lmms-eval doc is."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = list(samples)
        self.by_id = {s.sample_id: s for s in self.samples}
        self.stems = [(norm(s.question), option_texts(s), s) for s in self.samples]
        self._order: dict[Optional[str], list[Sample]] = {}
        for s in self.samples:
            self._order.setdefault(self._group(s), []).append(s)

    @staticmethod
    def _group(sample: Sample) -> Optional[str]:
        sub = sample.meta.get("subtask")
        return str(sub) if sub else None

    def _in_prompt(self, sample: Sample, prompt: str) -> bool:
        stem, opts = norm(sample.question), option_texts(sample)
        return (not stem or stem in prompt) and all(o in prompt for o in opts)

    def _positional(self, info: LmmsTask, doc_id: Any) -> Optional[Sample]:
        rows = self._order.get(info.subtask) or (self.samples if info.subtask is None else [])
        return rows[doc_id] if isinstance(doc_id, int) and 0 <= doc_id < len(rows) else None

    def find(self, info: LmmsTask, log: dict[str, Any]) -> tuple[Optional[Sample], str]:
        """(sample, "") or (None, why not)."""
        prompt = norm(log.get("input"))
        sid = direct_id(info, log)
        if sid is not None:
            sample = self.by_id.get(sid)
            if sample is None:
                return None, f"id {sid} is not in the release"
            if prompt and not self._in_prompt(sample, prompt):
                return None, f"id {sid}: its question/options are not in lmms-eval's prompt (another release revision?)"
            return sample, ""
        if not prompt:
            return None, "the log has neither an id nor the prompt ('input') to match on"
        here = self._positional(info, log.get("doc_id"))
        if here is not None and self._in_prompt(here, prompt) and _target_ok(here, log.get("target")):
            return here, ""
        found = [s for stem, opts, s in self.stems if stem and stem in prompt and all(o in prompt for o in opts)]
        if len(found) > 1:
            found = [s for s in found if _target_ok(s, log.get("target"))]
        if len(found) == 1:
            return found[0], ""
        if not found:
            return None, "no release sample's question and options occur in lmms-eval's prompt"
        ids = ", ".join(s.sample_id for s in found[:5])
        return None, f"ambiguous: {len(found)} release samples fit ({ids})"


# --------------------------------------------------------------------------- log-only import (no release)

LOG_ONLY_TASKS = ("videomme",)


def sample_from_log(info: LmmsTask, log: dict[str, Any]) -> tuple[Optional[Sample], str]:
    """A Sample rebuilt from the log alone (Video-MME: id, gold and breakdowns are logged)."""
    if info.ours != "videomme":
        return None, f"{info.ours}: the log alone does not carry the gold answer and breakdowns"
    doc = log.get("doc") if isinstance(log.get("doc"), dict) else {}
    m = {**_metric_payload(log, "videomme_perception_score"), **doc}
    qid, answer, video = m.get("question_id"), m.get("answer"), m.get("videoID")
    if not (qid and answer and video):
        return None, "the log lacks question_id / answer / videoID (run lmms-eval's videomme task unchanged)"
    options = doc.get("options") or [line for line in str(log.get("input", "")).splitlines()
                                      if VIDEOMME_OPTION.match(line)]
    cats = {"duration": m.get("duration"), "domain": m.get("domain", m.get("category")),
            "sub_category": m.get("sub_category"), "task_type": m.get("task_type", m.get("task_category"))}
    return Sample(task="videomme", sample_id=str(qid), video=VideoRef(f"data/{video}.mp4"),
                  question=str(m.get("question", "")),
                  options=tuple(str(o) for o in options), answer=str(answer),
                  categories={k: (str(v),) for k, v in cats.items() if v}, meta={"video_id": str(video)}), ""


__all__ = ["ReleaseIndex", "direct_id", "sample_from_log", "LOG_ONLY_TASKS", "norm", "option_texts"]
