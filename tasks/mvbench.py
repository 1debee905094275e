"""TASK CARD — MVBench (OpenGVLab/MVBench): 20 temporal tasks × 200 = 4,000 multiple-choice questions.

Release (hub ``OpenGVLab/MVBench``; code OpenGVLab/Ask-Anything ``video_chat2/mvbench.ipynb`` @4631cd6)
    ``<root>/json/<task>.json``: a list of records ``video`` (path relative to the task's folder),
    ``question``, ``candidates`` (option texts), ``answer`` (the TEXT of the right candidate) and, for the
    five "bound" tasks, ``start``/``end`` (seconds; ignored for the other tasks, as officially). Videos
    ``<root>/video/<folder>/<video>``, folders as the notebook's ``data_list`` (``TASKS``; its
    "pyour_data_path" for Fine-grained Action is a typo). Video files (mp4/webm/avi/gif) are read with
    PyAV; episodic_reasoning is a FOLDER of JPEG frames at 3 fps (``tvqa/frames_fps3_hq/<clip>/00001.jpg``
    …, 1-based; ``VideoRef.fps`` = 3). ``data_list`` types no task "gif"; its ``read_gif`` bound fps (25)
    applies to any ``.gif`` in the ``mvbench_centre`` sampler. Absent task files are skipped (logged).
    fine_grained_pose (nturgbd) videos are not in the release: users fetch NTU RGB+D
    (``meta["video_not_found_hint"]``). Sample: ``sample_id`` "<task>_<index in its json, 3 digits>";
    ``options`` "(A) text" lines; ``answer`` the official gold letter (``qa_template``: the LAST
    candidate equal to the answer; "@" = chr(ord('A') - 1) when none is, flagged
    ``gold_not_in_candidates``); ``categories`` {"task": (official title,)}; ``meta`` video_id
    ("<folder>/<video>": clips shared across tasks cluster together), subtask, data_type, index.

Prompt (notebook ``qa_template`` + ``infer_mvbench`` call)
    system ``SYSTEM``; user "Question: {q}\\nOptions:\\n(A) …\\n(B) …" (right-stripped) + "\\nOnly give the
    best option."; assistant prefix "Best option:(". (VideoChat2's ``system_llm=True`` also repeats the
    system text at the head of the user turn: a chat-template choice left to the model adapter.) The
    notebook generates up to 100 tokens; we default to 16 (lmms-eval's): check_ans reads only the first
    token of the first line, so verdicts differ only after 16+ tokens of leading whitespace
    (run.yaml ``max_new_tokens: 100`` restores it).

Scoring
    official: pred = "(" + raw.strip().split("\\n")[0] (``return_prompt``); ``check_ans``: both lowercased
        and split on ' ' (spaces only); correct iff pred's first token with every "." removed is a
        substring of gold's first token "(x)", or vice versa: "A", "a.", "(A)", "A)", and "(b)" for "(B) red"
        are right, "A\\tred" is wrong. Reproduced and FLAGGED: an empty/whitespace output gives "(" ⊂ "(x)"
        → correct (``empty_output_counted_correct``); a first token of dots likewise
        (``vacuous_output_counted_correct``). ``extracted`` = the compared token (None when it is "(").
    lmms-eval (``lmms_eval/tasks/mvbench/utils.py`` @f6548f5, same rule @1ab9504): gold = the FIRST
        candidate equal to the answer; ``mcq_acc`` normalises both sides (``^([A-E])\\.\\s*(.+)$``, else
        punctuation stripping — ``periodStrip.sub(.., re.UNICODE)`` passes 32 as COUNT — then the first
        stand-alone A–E: "It is a cat" → "A"); ``mvbench_aggregate_results`` leaves outputs == "" OUT of
        the denominator (``empty_output_excluded``). A gold not among the candidates crashes lmms-eval;
        here it counts wrong (flagged).

Aggregation (notebook last cell): per task correct/total ×100 (breakdown "task"); "Avg" = Σcorrect /
Σtotal over all tasks (micro). ``leaderboard_json`` gives ``upload_leaderboard.json``. Failed samples
(missing videos) carry no score (n_failed).

Known differences from lmms-eval beyond scoring: its prompt ("Question:" + q + "\\nOption:\\n", "A. …"
lines ("(A) …" @1ab9504), "Only give the best option.\\n", no system text or assistant prefix — we send the
official prompt in both modes) and its pre-cut segment folders (star/Charades_segment, nturgbd_convert …).

Frames: 16 segment centres over the bound (``get_index`` = sampler "mvbench_centre"). Neither the Vamba
paper nor the spec gives an MVBench resolution: longest edge 480, shortest 256 (its Video-MME/MLVU
setting); demo 8 frames.
"""

from __future__ import annotations

import json
import logging
import math
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from vamba_eval.aggregate import aggregate_accuracy
from vamba_eval.synth._release import NOTICE_FILE
from vamba_eval.task_api import DataError, FrameDefaults, PromptContext, Score, TaskDef, guard_record
from vamba_eval.taskutil import check_mode, read_json_file, require_fields, require_folder, text_field, unique_ids
from vamba_eval.types import Extraction, Prompt, Sample, ScoredSample, VideoRef

NAME = "mvbench"
TITLE = "MVBench"
LAYOUT = "<root>/json/<task>.json (hub OpenGVLab/MVBench) and <root>/video/<task folder>/<video> (unzipped)"
SYSTEM = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail and "
    "movement of objects, and the action and pose of persons. Based on your observations, select the best "
    "option that accurately addresses the question."
)
QUESTION_PROMPT = "\nOnly give the best option."
ANSWER_PROMPT = "Best option:("
RETURN_PROMPT = "("
FRAME_FPS = 3.0  # read_frame(fps=3)
BREAKDOWNS = ("task",)
NTU_HINT = (
    "MVBench does not ship the NTU RGB+D videos of fine_grained_pose: request them from "
    "https://rose1.ntu.edu.sg/dataset/actionRecognition/ and put them in <root>/video/nturgbd/."
)
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubTask:
    """One entry of the official ``data_list``: title → (json, folder, data type, bound)."""

    title: str
    json: str
    folder: str
    data_type: str  # "video" | "gif" | "frame" (read_video / read_gif / read_frame)
    bound: bool


TASKS: tuple[SubTask, ...] = (
    SubTask("Action Sequence", "action_sequence", "star/Charades_v1_480", "video", True),
    SubTask("Action Prediction", "action_prediction", "star/Charades_v1_480", "video", True),
    SubTask("Action Antonym", "action_antonym", "ssv2_video", "video", False),
    SubTask("Fine-grained Action", "fine_grained_action", "Moments_in_Time_Raw/videos", "video", False),
    SubTask("Unexpected Action", "unexpected_action", "FunQA_test/test", "video", False),
    SubTask("Object Existence", "object_existence", "clevrer/video_validation", "video", False),
    SubTask("Object Interaction", "object_interaction", "star/Charades_v1_480", "video", True),
    SubTask("Object Shuffle", "object_shuffle", "perception/videos", "video", False),
    SubTask("Moving Direction", "moving_direction", "clevrer/video_validation", "video", False),
    SubTask("Action Localization", "action_localization", "sta/sta_video", "video", True),
    SubTask("Scene Transition", "scene_transition", "scene_qa/video", "video", False),
    SubTask("Action Count", "action_count", "perception/videos", "video", False),
    SubTask("Moving Count", "moving_count", "clevrer/video_validation", "video", False),
    SubTask("Moving Attribute", "moving_attribute", "clevrer/video_validation", "video", False),
    SubTask("State Change", "state_change", "perception/videos", "video", False),
    SubTask("Fine-grained Pose", "fine_grained_pose", "nturgbd", "video", False),
    SubTask("Character Order", "character_order", "perception/videos", "video", False),
    SubTask("Egocentric Navigation", "egocentric_navigation", "vlnqa", "video", False),
    SubTask("Episodic Reasoning", "episodic_reasoning", "tvqa/frames_fps3_hq", "frame", True),
    SubTask("Counterfactual Inference", "counterfactual_inference", "clevrer/video_validation", "video", False),
)
BY_JSON = {t.json: t for t in TASKS}


# --------------------------------------------------------------------------- loading


def load(folder: Path) -> list[Sample]:
    """Samples of every task whose ``json/<task>.json`` exists, in the official task order."""
    root = require_folder(Path(folder), TITLE, LAYOUT)
    present = [t for t in TASKS if (root / "json" / f"{t.json}.json").is_file()]
    if not present:
        raise DataError(f"{root / 'json'}: none of the 20 MVBench task files found. Expected layout: {LAYOUT}")
    if len(present) < len(TASKS) and not (root / NOTICE_FILE).exists():  # the demo has 5 tasks
        _log.warning("%s: MVBench tasks without a json file are skipped: %s", root,
                     ", ".join(t.json for t in TASKS if t not in present))
    return unique_ids((pair for t in present for pair in _read_task(root, t)), "sample id")


def _read_task(root: Path, task: SubTask) -> Iterator[tuple[Sample, str]]:
    path = root / "json" / f"{task.json}.json"
    records = read_json_file(path)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of questions, got {type(records).__name__}. Re-download the file.")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: record {i}: expected a JSON object, got {type(rec).__name__}. Re-download the file.")
        sample = guard_record(lambda: _sample(root, task, rec, path, i), task=NAME, sample_id=f"{task.json}_{i:03d}",
                              source=path)
        yield sample, f"{path}: record {i}"


def _sample(root: Path, task: SubTask, rec: dict[str, Any], path: Path, i: int) -> Sample:
    bound = ("start", "end") if task.bound else ()
    require_fields(rec, ("video", "question", "candidates", "answer", *bound), path, f"record {i}")
    where = f"record {i} (video {str(rec['video'])[:120]})"
    video_rel = text_field(rec, "video", path, where)
    question = text_field(rec, "question", path, where)
    cands = rec["candidates"]
    if not isinstance(cands, list) or not 1 <= len(cands) <= 26:
        raise DataError(f"{path}: {where}: 'candidates' must be a list of 1–26 options, got {cands!r}. Fix the record.")
    for value in (*cands, rec["answer"]):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise DataError(f"{path}: {where}: candidates and answer must be texts (or numbers), found {value!r}. "
                            "Fix the record.")
    start, end = (_seconds(rec, key, path, where) for key in ("start", "end")) if bound else (None, None)
    rel = f"{task.folder}/{video_rel}"
    meta: dict[str, Any] = {"video_id": rel, "subtask": task.json, "data_type": task.data_type, "index": i}
    if task.json == "fine_grained_pose":
        meta["video_not_found_hint"] = NTU_HINT
    video = VideoRef(str(root / "video" / rel), start, end, FRAME_FPS if task.data_type == "frame" else None)
    options = tuple(f"({string.ascii_uppercase[k]}) {c}" for k, c in enumerate(cands))
    return Sample(NAME, f"{task.json}_{i:03d}", video, question, options,
                  gold_letter(cands, rec["answer"]), {"task": (task.title,)}, meta=meta)


def _seconds(rec: dict[str, Any], key: str, path: Path, where: str) -> float:
    value = rec[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{path}: {where}: '{key}' must be a number of seconds, got {value!r}. Fix the record.")
    return float(value)


def gold_letter(candidates: Sequence[Any], answer: Any) -> str:
    """``qa_template``: the LAST candidate equal to the answer (no break); "@" (index −1) if none."""
    return chr(ord("A") + max((k for k, cand in enumerate(candidates) if cand == answer), default=-1))


# --------------------------------------------------------------------------- prompt


def prompt(sample: Sample, ctx: PromptContext) -> Prompt:
    block = f"Question: {sample.question}\nOptions:\n" + "".join(f"{o}\n" for o in sample.options)
    return Prompt(user=block.rstrip() + QUESTION_PROMPT, system=SYSTEM, assistant_prefix=ANSWER_PROMPT)


# --------------------------------------------------------------------------- scoring


def _option_text(sample: Sample, letter: str) -> Optional[str]:
    k = string.ascii_uppercase.find(letter) if len(letter) == 1 else -1
    return sample.options[k][len(letter) + 3:] if 0 <= k < len(sample.options) else None


def gold_string(sample: Sample) -> str:
    """The official ``gt``: "(x) text" ("(@) " when the answer is not a candidate)."""
    return f"({sample.answer}) {_option_text(sample, sample.answer) or ''}"


def official_prediction(raw: str) -> str:
    """``infer_mvbench``: "(" (return_prompt) + the first line of the stripped output."""
    return RETURN_PROMPT + raw.strip().split("\n")[0]


def check_ans(pred: str, gt: str) -> bool:
    """The notebook's ``check_ans`` (its unused ``gt_content`` handling, which would crash on an empty
    gold text, is left out)."""
    pred_option = pred.lower().split(" ")[0]
    gt_option = gt.lower().split(" ")[0]
    return pred_option.replace(".", "") in gt_option or gt_option in pred_option


def _score_official(raw: str, sample: Sample) -> Score:
    pred = official_prediction(raw)
    token = pred.lower().split(" ")[0].replace(".", "")
    correct = check_ans(pred, gold_string(sample))
    flags = ["gold_not_in_candidates"] if sample.answer == "@" else []
    if token == RETURN_PROMPT:  # always a substring of "(x)": counted correct by the official rule
        flags.append("empty_output_counted_correct" if pred == RETURN_PROMPT else "vacuous_output_counted_correct")
    extracted = None if token == RETURN_PROMPT else token
    return Score(Extraction(extracted, "mvbench_check_ans"), correct=correct, flags=tuple(flags))


_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: a lookahead, not a lookbehind
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_OPTION_RE = re.compile(r"^([A-E])\.\s*(.+)$", re.IGNORECASE)


def _process_punctuation(in_text: str) -> str:
    out = in_text
    for p in _PUNCT:
        if (p + " " in in_text or " " + p in in_text) or _COMMA_STRIP.search(in_text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, re.UNICODE)  # sic: re.UNICODE (32) lands in ``count``


def mcq_process(answer: str) -> str:
    """lmms-eval ``mcq_acc.process``, step for step."""
    match = _OPTION_RE.match(answer.strip())
    if match:
        return match.group(1).upper()
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    answer = _process_punctuation(answer)
    answer = answer.strip("'").strip('"').strip(")").strip("(").strip().lower()
    letter = re.search(r"\b([A-E])\b", answer, re.IGNORECASE)
    return letter.group(1).upper() if letter else answer


def lmms_gold_letter(sample: Sample) -> Optional[str]:
    """lmms-eval's gold: the FIRST candidate equal to the answer (None if the answer is no candidate)."""
    texts = [_option_text(sample, letter) for letter in string.ascii_uppercase[: len(sample.options)]]
    text = _option_text(sample, sample.answer)
    return None if text is None else string.ascii_uppercase[texts.index(text)]


def _score_lmms(raw: str, sample: Sample) -> Score:
    if raw == "":  # mvbench_aggregate_results: only pred_answer != "" is in the denominator
        return Score(Extraction(None, "lmms_eval_mcq_acc"), correct=None, flags=("empty_output_excluded",))
    pred = mcq_process(raw)
    gold = lmms_gold_letter(sample)
    extraction = Extraction(pred or None, "lmms_eval_mcq_acc")
    if gold is None:
        return Score(extraction, correct=False, flags=("gold_not_in_candidates",))
    return Score(extraction, correct=(pred == mcq_process(gold)))


def score(raw: str, sample: Sample, mode: str) -> Score:
    return (_score_official if check_mode(mode) == "official" else _score_lmms)(raw or "", sample)


# --------------------------------------------------------------------------- aggregation


def aggregate(scored: Sequence[ScoredSample], mode: str) -> dict[str, Any]:
    notes = ["Avg = total correct / total over all tasks (micro), as the official notebook."]
    if check_mode(mode) == "official":
        notes.append("Official check_ans counts an empty output as correct (flag empty_output_counted_correct).")
    else:
        notes.append("lmms-eval: empty outputs are left out of the denominator (flag empty_output_excluded).")
    return aggregate_accuracy(scored, task=NAME, title=TITLE, scoring=mode, breakdowns=BREAKDOWNS,
                              n_total=len(scored), notes=notes)


def leaderboard_json(result: dict[str, Any]) -> dict[str, Optional[float]]:
    """``upload_leaderboard.json``: {task title: acc %, …, "Avg": acc %}, in the official task order."""
    per = result["breakdowns"].get("task", {})
    out = {t.title: per[t.title]["value"] for t in TASKS if t.title in per}
    out["Avg"] = result["overall"]["value"]
    return out


# --------------------------------------------------------------------------- demo


DEMO_SECONDS = 12
DEMO_ITEMS = 8  # 5 tasks × 8 = 40 questions: enough to tell a model from guessing (±15 points at 95 %)
TRAIN_ITEMS = 2  # per release of the training data (vamba_eval.train): the bundled checkpoints' data and tokenizer
# (json, question kinds, options, container): together they cover mp4 (bound and not), gif and frame folders
DEMO_TASKS = (
    ("action_sequence", ("eu_event",), 4, "mp4"),
    ("fine_grained_action", ("attr_color", "er_shape"), 4, "gif"),
    ("object_existence", ("er_shape",), 3, "mp4"),
    ("episodic_reasoning", ("kir_digit", "kir_word"), 4, "frames"),
    ("counterfactual_inference", ("count_shapes", "sum_count"), 4, "mp4"),
)


def write_demo(folder: Path, seed: int, items: int = DEMO_ITEMS) -> Path:
    """A few tasks in MVBench's exact layout (video, bound video, gif, frame folder) from ``vamba_eval.synth``."""
    from vamba_eval.synth._release import write_notice, write_text

    folder = Path(folder)
    for t, (stem, kinds, n_opts, kind) in enumerate(DEMO_TASKS):
        task, records = BY_JSON[stem], []
        for k in range(items):
            script, q = _demo_question(seed, (t, k), kinds, task.bound)
            name = _demo_name(kind, t, k)
            _write_demo_video(script, folder / "video" / task.folder / name, kind)
            records.append(_demo_record(q, name, n_opts, task.bound))
        write_text(folder / "json" / f"{stem}.json", json.dumps(records, indent=2, ensure_ascii=False) + "\n")
    write_notice(folder, TITLE, seed)
    return folder


def _demo_question(seed: int, item: tuple[int, int], kinds: Sequence[str], bound: bool) -> tuple[Any, Any]:
    from vamba_eval.synth._release import stream_rng
    from vamba_eval.synth.questions import pick_questions
    from vamba_eval.synth.world import random_script

    for attempt in range(50):
        rng = stream_rng(seed, 300, *item, attempt)
        script = random_script(rng, DEMO_SECONDS)
        found = pick_questions(script, rng, 1, [list(kinds)])
        if found and (not bound or found[0].span[0] > 0):  # bounds that start after 0 s
            return script, found[0]
    raise RuntimeError(f"no demo question of kinds {kinds} for item {item}")  # pragma: no cover


def _demo_name(kind: str, t: int, k: int) -> str:
    names = {"gif": f"demo_{t}{k}.gif", "frames": f"s01e0{k + 1}_seg0{t}_clip_00"}
    return names.get(kind, f"video_{10000 + 10 * t + k}.mp4")


def _demo_record(q: Any, name: str, n_opts: int, bound: bool) -> dict[str, Any]:
    drop = [o for o in q.options if o != q.answer_text][: len(q.options) - n_opts]
    rec: dict[str, Any] = {"video": name, "question": q.text, "candidates": [o for o in q.options if o not in drop],
                           "answer": q.answer_text}
    if bound:
        rec["start"], rec["end"] = float(q.span[0]), float(q.span[1])
    return rec


def _write_demo_video(script: Any, path: Path, kind: str) -> None:
    from PIL import Image

    from vamba_eval.synth.render import render, render_frame

    if kind == "mp4":
        render(script, path, fps=4)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "gif":  # 5 fps; PIL merges identical consecutive frames (as real GIFs do)
        frames = [Image.fromarray(render_frame(script, i / 5)) for i in range(script.duration_s * 5)]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=200, loop=0)
        return
    path.mkdir(parents=True, exist_ok=True)  # tvqa style: 00001.jpg … at 3 fps, file k shows (k − 1) / 3 s
    for i in range(int(script.duration_s * FRAME_FPS)):
        Image.fromarray(render_frame(script, i / FRAME_FPS)).save(path / f"{i + 1:05d}.jpg", quality=90)


TASK = TaskDef(
    name=NAME,
    title=TITLE,
    card=__doc__ or "",
    load=load,
    prompt=prompt,
    score=score,
    aggregate=aggregate,
    write_demo=write_demo,
    write_train_release=lambda folder, seed: write_demo(folder, seed, TRAIN_ITEMS),
    frames=FrameDefaults(num_frames=16, max_edge=480, min_edge=256, sampler="mvbench_centre"),  # demo: 8
    breakdowns=BREAKDOWNS,
    max_new_tokens=16,
    hub_id="OpenGVLab/MVBench",
    release_layout=LAYOUT,
    extra={"leaderboard_json": leaderboard_json, "tasks": TASKS, "gold_string": gold_string},
)
