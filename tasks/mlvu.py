"""TASK CARD — MLVU multiple choice (JUNJIE99/MLVU): 7 tasks, 2,175 dev questions; test split with 6 options.

Release (hub ``MLVU/MVLU`` dev, ``MLVU/MLVU_Test`` test; layouts in ``tasks/_mlvu_common.py``)
    dev: ``json/<n>_<task>.json`` — 1_plotQA (539), 2_needle (355), 3_ego (352), 4_count (206),
    5_order (259), 6_anomaly_reco (200), 7_topic_reasoning (264) — videos ``video/<n>_<task>/<file>``
    (``video/<task>/`` as in the official template also found). Record: video, duration (s), question,
    candidates (4), answer (the TEXT of the right candidate), question_type. All seven files are
    required (M-Avg needs every task). test: ``test-ground-truth/test_mcq_gt.json`` (answers as text,
    6 candidates A–F, ``question_id`` "AR_0", ``question_type`` one of 9: anomaly_reco, count, ego,
    needleQA, order, plotQA, sportsQA, topic_reasoning, tutorialQA) or ``test_question.json`` without
    answers (then nothing is scored: export ``submission``).
    Sample: ``sample_id`` = "<n>_<task>_<index>" (dev; the release has no ids) or question_id (test);
    ``options`` = "(A) c0" … (letters A.. for as many candidates as the record has);
    ``categories`` = {"task": (label,), "split": (dev|test,)} with the template's labels (plotQA,
    needle, ego, count, order, anomaly_reco, topic_reasoning) or the test record's question_type;
    ``meta`` = video_id (the cluster key "<n>_<task>/<video>"), duration, question_type, split.

Gold letter (``evaluation/multiple_choice_evaluation/choice_bench.py`` ``MLVU.qa_template``)
    ``for idx, c in enumerate(candidates): if c == answer: answer_idx = idx`` — no break, so
    DUPLICATE candidates map to the LAST matching index; raw ``==`` (a number never equals its
    string). An answer among NO candidate keeps ``answer_idx = -1`` → gold "(@)": no response can
    match, the question counts wrong (2 needle items). Both are kept, flagged per sample
    (``answer_not_in_candidates``, ``duplicate_candidates``, ``answer_duplicated_gold_last``) and
    counted in the notes.

Prompt (choice_bench.py ``main`` + ``qa_template``, verbatim)
    system "Carefully watch this video and pay attention to every detail. Based on your
    observations, select the best option that accurately addresses the question."; user (after the
    video) "Question: {q}\\nOptions:\\n(A) c0\\n(B) c1…" (right-stripped) + "\\nOnly give the best
    option."; the assistant turn starts with "Best Option: (" and the model's CONTINUATION is scored.
    (The template samples with temperature 0.1 and 1,024 new tokens; the check reads up to the first
    ")", so we decode greedily with 16.)

Check (choice_bench.py ``check_ans``; the response is ``.strip()``-ed when decoded)
    if ")" is in the continuation: the ONE character before the first ")" ("B) Yellow" → B;
    ") B" → "" wrong); else the whole continuation must equal the letter: "B" → B, but "A. Yellow" and
    "(B" are WRONG. Letters run to F on the 6-option test split. A result that is no option letter is
    recorded as unparsed (and wrong): every scored question is in the denominator.

Aggregation
    official: accuracy per task; M-Avg = UNWEIGHTED mean of the per-task accuracies over the tasks
        evaluated (``final_res['Avg'] = total / idx``) — results.json ``overall`` is M-Avg, the
        per-task accuracies are the ``task`` breakdown. The pooled (micro) accuracy VLMEvalKit reports is
        kept in ``notes`` only, labelled "not official". A task whose questions all failed is left out.
    lmms-eval (``lmms_eval/tasks/mlvu/utils.py`` @801baf6): same per-sample check
        (``extract_characters_regex``: strip; char before the first ")" else the whole string), but
        ``mlvu_aggregate_results_dev``/``_test`` divide by ALL 7 (dev) / 9 (test) task types, an absent
        task counting 0 (matters with --limit). Its prompt differs: no system line, the options are
        inside the hub's ``question``, and "Best option: (" ends the USER turn; our prompt is the official
        one in both modes. Older lmms-eval (@025f016) used Video-MME's regex and pooled accuracy.

Test submission (``Evaluation_Test/test_bench.py`` + README): a JSON list of
    {"question_id", "question_type", "option"}; ``submission(records)``. test_bench.py's option is the
    stripped text BEFORE the first ")" (whole text without one) — the default ``rule="test_bench"``;
    ``rule="check_ans"`` uses the dev check's single character instead. Failed samples get "".

Vamba paper setting: 512 frames, longest edge 480, shortest edge 256.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from vamba_eval.aggregate import aggregate_accuracy, estimate_of
from vamba_eval.records import Estimate
from vamba_eval.stats import macro_estimate
from vamba_eval.task_api import DataError, FrameDefaults, PromptContext, Score, TaskDef, guard_record
from vamba_eval.taskutil import check_mode, id_field, record_id, require_fields, text_field, unique_ids
from vamba_eval.types import Extraction, Prompt, Sample, ScoredSample, VideoRef

from ._mlvu_common import (
    LAYOUT, MC_TASKS, TEST_MC_FILE, TEST_VIDEO_DIRS, Release, dev_video_folders, duration_of, find_release,
    read_json_list, require_text, unlabelled_test_file, video_path, where,
)  # fmt: skip

NAME = "mlvu"
TITLE = "MLVU"
LETTERS = "ABCDEF"  # 4 candidates on dev, 6 on test
SYSTEM = (
    "Carefully watch this video and pay attention to every detail. Based on your observations, "
    "select the best option that accurately addresses the question."
)
USER_SUFFIX = "\nOnly give the best option."
ASSISTANT_PREFIX = "Best Option: ("
NOT_IN_CANDIDATES = chr(ord("A") - 1)  # "@": qa_template's answer_idx = -1
LMMS_TYPES = {  # lmms-eval mlvu_aggregate_results_dev / _test: the fixed divisors
    "dev": ("anomaly_reco", "count", "ego", "needle", "order", "plotQA", "topic_reasoning"),
    "test": ("anomaly_reco", "count", "ego", "needleQA", "order", "plotQA", "sportsQA", "topic_reasoning", "tutorialQA"),
}
QUIRKS = ("answer_not_in_candidates", "duplicate_candidates", "answer_duplicated_gold_last")

# --------------------------------------------------------------------------- loading


def load(folder: Path) -> list[Sample]:
    """Samples of a local MLVU release: the dev set's 7 multiple-choice tasks, or the test set."""
    release = find_release(Path(folder), TITLE)
    pairs = _load_dev(release) if release.split == "dev" else _load_test(release)
    return unique_ids(pairs, "sample id")


def _load_dev(release: Release) -> Iterator[tuple[Sample, str]]:
    missing = [str(release.json_path(stem)) for stem in MC_TASKS if not release.json_path(stem).is_file()]
    if missing:
        raise DataError(f"{', '.join(missing)}: missing (M-Avg needs all 7 multiple-choice tasks). Expected layout: {LAYOUT}")
    for stem, label in MC_TASKS.items():
        path = release.json_path(stem)
        for i, rec in enumerate(read_json_list(path)):
            def build(rec: dict[str, Any] = rec, i: int = i) -> Sample:
                require_fields(rec, ("video", "question", "candidates", "answer"), path, where(i, rec))
                return _sample(release, rec, path, i, label=label, sample_id=f"{stem}_{i}",
                               folders=dev_video_folders(stem, label), cluster=stem)

            yield guard_record(build, task=NAME, sample_id=f"{stem}_{i}", source=path), f"{path}: {where(i, rec)}"


def _load_test(release: Release) -> Iterator[tuple[Sample, str]]:
    path = release.json_path(TEST_MC_FILE)
    if not path.is_file():
        path = unlabelled_test_file(release.root) or path
    for i, rec in enumerate(read_json_list(path)):
        at, qid = where(i, rec), record_id(rec.get("question_id"))

        def build(rec: dict[str, Any] = rec, i: int = i, at: str = at) -> Sample:
            require_fields(rec, ("question_id", "question_type"), path, at)
            return _sample(release, rec, path, i, label=text_field(rec, "question_type", path, at),
                           sample_id=id_field(rec, "question_id", path, at), folders=TEST_VIDEO_DIRS, cluster="")

        yield guard_record(build, task=NAME, sample_id=qid or f"{path.stem}_{i}", source=path), f"{path}: {at}"


def gold_letter(candidates: Sequence[Any], answer: Any) -> tuple[str, tuple[str, ...]]:
    """qa_template's answer letter (LAST matching index; "@" when none matches) and the quirks seen."""
    answer_idx = -1
    matches = 0
    for idx, c in enumerate(candidates):
        if c == answer:
            answer_idx = idx
            matches += 1
    return chr(ord("A") + answer_idx), _quirks(candidates, matches)


def _quirks(candidates: Sequence[Any], matches: int) -> tuple[str, ...]:
    dup = any(candidates[i] == candidates[j] for i in range(len(candidates)) for j in range(i + 1, len(candidates)))
    return tuple(q for q, on in zip(QUIRKS, (matches == 0, dup, matches > 1)) if on)


def _candidates(rec: dict[str, Any], path: Path, at: str) -> list[Any]:
    cands = rec.get("candidates")
    if not isinstance(cands, list) or not 2 <= len(cands) <= len(LETTERS):
        raise DataError(f"{path}: {at}: 'candidates' must be a list of 2–{len(LETTERS)} options, found {cands!r}. "
                        "Re-download the release.")
    for c in cands:
        if not isinstance(c, (str, int, float)) or isinstance(c, bool):
            raise DataError(f"{path}: {at}: candidate {c!r} is not text or a number. Fix the record.")
    return cands


def _sample(release: Release, rec: dict[str, Any], path: Path, i: int, *, label: str, sample_id: str,
            folders: Sequence[str], cluster: str) -> Sample:
    at = where(i, rec)
    video = require_text(rec, "video", path, at)
    question = require_text(rec, "question", path, at)
    cands = _candidates(rec, path, at)
    labelled = "answer" in rec and rec["answer"] is not None
    if labelled and (not isinstance(rec["answer"], (str, int, float)) or isinstance(rec["answer"], bool)):
        raise DataError(f"{path}: {at}: 'answer' must be the text (or number) of a candidate, found "
                        f"{rec['answer']!r}. Fix the record.")
    gold, quirks = gold_letter(cands, rec["answer"]) if labelled else ("", ())
    meta: dict[str, Any] = {"video_id": f"{cluster}/{video}" if cluster else video, "split": release.split,
                            "question_type": str(rec.get("question_type", label)), "quirks": quirks}
    duration = duration_of(rec, path, at)
    if duration is not None:
        meta["duration"] = duration
    return Sample(
        task=NAME, sample_id=sample_id, video=VideoRef(path=str(video_path(release, video, folders))),
        question=question, options=tuple(f"({LETTERS[k]}) {c}" for k, c in enumerate(cands)), answer=gold,
        categories={"task": (label,), "split": (release.split,)}, meta=meta,
    )


# --------------------------------------------------------------------------- prompt / check


def question_text(question: str, options: Sequence[str]) -> str:
    """qa_template: "Question: {q}\\nOptions:\\n" + one "(X) c\\n" line per candidate, right-stripped."""
    text = f"Question: {question}\n" + "Options:\n" + "".join(f"{line}\n" for line in options)
    return text.rstrip()


def prompt(sample: Sample, ctx: PromptContext) -> Prompt:
    return Prompt(user=question_text(sample.question, sample.options) + USER_SUFFIX, system=SYSTEM,
                  assistant_prefix=ASSISTANT_PREFIX)


def check_ans(pred: str, gt_option: str) -> tuple[str, bool]:
    """choice_bench.py ``check_ans`` on the decoded (``.strip()``-ed) continuation: (what it compared, verdict)."""
    pred = pred.strip()
    if ")" in pred:
        index3 = pred.index(")")
        pred = pred[index3 - 1 : index3]
    return pred, pred == gt_option


def quirk_flags(options: Sequence[str], answer: str) -> tuple[str, ...]:
    """The data quirks of a question, from what a run record keeps (options + gold letter)."""
    texts = [o.split(") ", 1)[1] if ") " in o else o for o in options]
    flags = ["answer_not_in_candidates"] if answer == NOT_IN_CANDIDATES else []
    if len(set(texts)) < len(texts):
        flags.append("duplicate_candidates")
    k = LETTERS.find(answer) if answer else -1
    if 0 <= k < len(texts) and texts.count(texts[k]) > 1:
        flags.append("answer_duplicated_gold_last")
    return tuple(flags)


def score(raw: str, sample: Sample, mode: str) -> Score:
    check_mode(mode)  # both modes use the same per-sample check (see the card)
    got, ok = check_ans(raw or "", sample.answer)
    letters = LETTERS[: len(sample.options)]
    extraction = Extraction(got if len(got) == 1 and got in letters else None, "mlvu_check_ans")
    flags = quirk_flags(sample.options, sample.answer)
    if not sample.answer:
        return Score(extraction, correct=None, flags=flags + ("unlabelled",))
    return Score(extraction, correct=ok, flags=flags)


# --------------------------------------------------------------------------- aggregation


def _split(scored: Sequence[ScoredSample]) -> str:
    splits = {label for s in scored for label in s.categories.get("split", ())}
    return "test" if "test" in splits else "dev"


def m_avg(per_task: Mapping[str, Estimate], mode: str, split: str) -> Estimate:
    """official: mean over the evaluated tasks; lmms-eval: sum over its fixed list / its length."""
    if mode == "official":
        return macro_estimate(list(per_task.values()), bounds=(0.0, 100.0))
    types = LMMS_TYPES[split]
    return macro_estimate([per_task[t] for t in types if t in per_task], divisor=len(types), bounds=(0.0, 100.0))


def _notes(scored: Sequence[ScoredSample], per_task: Mapping[str, Estimate], mode: str, split: str) -> list[str]:
    pooled = estimate_of(scored)
    used = [t for t, e in per_task.items() if e.value is not None]
    rule = (f"overall = M-Avg: unweighted mean of the {len(used)} per-task accuracies (choice_bench.py final_res['Avg'])"
            if mode == "official" else
            f"overall = lmms-eval M-Avg: sum of per-task accuracies / {len(LMMS_TYPES[split])} fixed {split} task "
            "types (absent = 0)")
    notes = [rule + "; per-task accuracies in the 'task' breakdown."]
    if pooled.value is not None:
        notes.append(f"VLMEvalKit-style pooled (not official): {pooled.value:.2f}% ({pooled.correct}/{pooled.n})")
    left_out = sorted(t for t, e in per_task.items() if e.value is None)
    if left_out:
        notes.append(f"tasks with no scored question, left out of M-Avg: {', '.join(left_out)}")
    flags = Counter(f for s in scored if s.error is None for f in s.flags)
    notes.append(
        f"data quirks (official handling): {flags['answer_not_in_candidates']} answer not among candidates (gold '@', "
        f"always wrong); {flags['duplicate_candidates']} duplicate candidates, {flags['answer_duplicated_gold_last']} "
        "with the answer duplicated (gold = LAST matching index)")
    if flags["unlabelled"]:
        notes.append(f"{flags['unlabelled']} unlabelled test questions: no score — export them with submission()")
    return notes


def aggregate(scored: Sequence[ScoredSample], mode: str) -> dict[str, Any]:
    mode = check_mode(mode)
    result = aggregate_accuracy(scored, task=NAME, title=TITLE, scoring=mode, breakdowns=("task",), n_total=len(scored))
    per_task = {label: Estimate.model_validate(e) for label, e in result["breakdowns"]["task"].items()}
    split = _split(scored)
    result["overall"] = m_avg(per_task, mode, split).model_dump(mode="json")
    result["metric"] = "M-Avg"
    result["notes"] = _notes(scored, per_task, mode, split)
    return result


# --------------------------------------------------------------------------- test submission


def submission_option(response: str, rule: str = "test_bench") -> str:
    """test_bench.py: strip; text before the first ")" (stripped) — or ``check_ans``'s character."""
    if rule == "check_ans":
        return check_ans(response, "")[0]
    if rule != "test_bench":
        raise ValueError(f"unknown submission rule {rule!r}; use 'test_bench' or 'check_ans'")
    pred = response.strip()
    if ")" in pred:
        pred = pred[: pred.index(")")].strip()
    return pred


def submission(records: Iterable[Any], rule: str = "test_bench") -> list[dict[str, str]]:
    """The MLVU test submission: [{question_id, question_type, option}] from run records
    (``SampleRecord`` objects or their dicts) of this task, in the order given."""
    out = []
    for rec in records:
        data = rec.model_dump() if hasattr(rec, "model_dump") else dict(rec)
        if data.get("task", NAME) != NAME:
            continue
        task = (data.get("categories") or {}).get("task") or [""]
        response = data.get("response")
        option = "" if data.get("error") or response is None else submission_option(response, rule)
        out.append({"question_id": str(data["sample_id"]), "question_type": str(task[0]), "option": option})
    return out


def write_demo(folder: Path, seed: int) -> Path:
    from vamba_eval.synth.mlvu import write_release

    return write_release(folder, seed=seed, part="mc")


def write_train_release(folder: Path, seed: int) -> Path:
    from vamba_eval.synth.mlvu import TRAIN_VIDEOS_PER_TASK, write_release

    return write_release(folder, seed=seed, part="mc", videos_per_task=TRAIN_VIDEOS_PER_TASK)


TASK = TaskDef(
    name=NAME,
    title=TITLE,
    card=__doc__ or "",
    load=load,
    prompt=prompt,
    score=score,
    aggregate=aggregate,
    write_demo=write_demo,
    write_train_release=write_train_release,
    frames=FrameDefaults(num_frames=512, max_edge=480, min_edge=256),
    breakdowns=("task",),
    max_new_tokens=16,
    hub_id="MLVU/MVLU",
    release_layout=LAYOUT,
    extra={"submission": submission, "check_ans": check_ans, "gold_letter": gold_letter, "lmms_types": LMMS_TYPES},
)
