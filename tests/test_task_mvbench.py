"""MVBench adapter: the official data_list, loader, prompt, check_ans quirks, lmms-eval mode,
aggregation, the demo release and a run end to end.

Release folders are written by the tests (json + tiny videos whose frames carry their own index,
see tests/video_fixtures.py); nothing is downloaded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import video_fixtures as vf  # noqa: E402

from vamba_eval.task_api import DataError, PromptContext  # noqa: E402
from vamba_eval.taskutil import scored_sample  # noqa: E402
from vamba_eval.types import Sample, VideoRef  # noqa: E402
from vamba_eval.tasks import mvbench as mvb  # noqa: E402
from vamba_eval.video import FrameSpec  # noqa: E402

# --------------------------------------------------------------------------- fixtures


def rec(video: str = "v.mp4", answer: Any = "red circle", candidates: Any = ("red circle", "blue square"), **extra):
    return {"video": video, "question": "Which shape moves?", "candidates": list(candidates), "answer": answer, **extra}


def write_release(root: Path, tasks: dict[str, Any]) -> Path:
    """``root/json/<task>.json`` for each task (raw text when given a str)."""
    (root / "json").mkdir(parents=True, exist_ok=True)
    for name, records in tasks.items():
        text = records if isinstance(records, str) else json.dumps(records)
        (root / "json" / f"{name}.json").write_text(text, encoding="utf-8")
    return root


def sample(answer: str = "A", options=("(A) red circle", "(B) blue square", "(C) red")) -> Sample:
    return Sample("mvbench", "t_000", VideoRef("x.mp4"), "q", tuple(options), answer)


def official(raw: str, s: Sample | None = None):
    return mvb.score(raw, s or sample(), "official")


def lmms(raw: str, s: Sample | None = None):
    return mvb.score(raw, s or sample(), "lmms-eval")


# --------------------------------------------------------------------------- the official data_list


# mvbench.ipynb data_list, in order: json, folder under your_data_path, data type, bound
OFFICIAL = """action_sequence star/Charades_v1_480 video 1 | action_prediction star/Charades_v1_480 video 1
action_antonym ssv2_video video 0 | fine_grained_action Moments_in_Time_Raw/videos video 0
unexpected_action FunQA_test/test video 0 | object_existence clevrer/video_validation video 0
object_interaction star/Charades_v1_480 video 1 | object_shuffle perception/videos video 0
moving_direction clevrer/video_validation video 0 | action_localization sta/sta_video video 1
scene_transition scene_qa/video video 0 | action_count perception/videos video 0
moving_count clevrer/video_validation video 0 | moving_attribute clevrer/video_validation video 0
state_change perception/videos video 0 | fine_grained_pose nturgbd video 0
character_order perception/videos video 0 | egocentric_navigation vlnqa video 0
episodic_reasoning tvqa/frames_fps3_hq frame 1 | counterfactual_inference clevrer/video_validation video 0"""


def test_task_table_is_the_official_data_list():
    rows = [row.split() for row in OFFICIAL.replace("\n", " | ").split(" | ")]
    assert [(t.json, t.folder, t.data_type, str(int(t.bound))) for t in mvb.TASKS] == [tuple(r) for r in rows]
    assert [t.title for t in mvb.TASKS][2:4] == ["Action Antonym", "Fine-grained Action"]


def test_registered_with_its_frame_setting():
    from vamba_eval.registry import get_task

    task = get_task("mvbench")
    f = task.frames
    assert (f.sampler, f.num_frames, f.max_edge, f.min_edge, f.demo_num_frames) == ("mvbench_centre", 16, 480, 256, 8)
    assert task.breakdowns == ("task",) and "TASK CARD" in task.card and task.max_new_tokens == 16


# --------------------------------------------------------------------------- loader


def test_loader_official_order_ids_options_and_paths(tmp_path):
    root = write_release(tmp_path, {"episodic_reasoning": [rec("clip_1", start=1.0, end=4.0)],
                                    "action_sequence": [rec("A1.mp4", start=2, end=5), rec("A2.mp4", start=0, end=3)]})
    samples = mvb.load(root)
    assert [s.sample_id for s in samples] == ["action_sequence_000", "action_sequence_001", "episodic_reasoning_000"]
    s = samples[0]
    assert s.options == ("(A) red circle", "(B) blue square") and s.answer == "A"
    assert s.categories == {"task": ("Action Sequence",)}
    assert s.video.path == str(root / "video" / "star" / "Charades_v1_480" / "A1.mp4")
    assert s.video_key == "star/Charades_v1_480/A1.mp4" and s.meta["subtask"] == "action_sequence"


def test_bound_tasks_pass_start_end_and_unbound_tasks_ignore_them(tmp_path):
    root = write_release(tmp_path, {"action_sequence": [rec(start=1.5, end=4)],
                                    "object_existence": [rec(start=1.5, end=4)]})
    bound, unbound = mvb.load(root)
    assert (bound.video.start, bound.video.end, bound.video.fps) == (1.5, 4.0, None)
    assert (unbound.video.start, unbound.video.end) == (None, None)  # official: bound only for bound tasks


def test_frame_folder_task_is_read_at_3_fps(tmp_path):
    (s,) = mvb.load(write_release(tmp_path, {"episodic_reasoning": [rec("s01e01_clip", start=3, end=9)]}))
    assert s.video.fps == 3.0 and (s.video.start, s.video.end) == (3.0, 9.0)
    assert s.video.path.endswith("tvqa/frames_fps3_hq/s01e01_clip")


def test_gold_is_the_last_matching_candidate_or_at_sign():
    assert mvb.gold_letter(["x", "y", "x"], "x") == "C"  # qa_template has no break
    assert mvb.gold_letter(["x", "y"], "z") == "@"  # answer_idx -1 → chr(ord('A') - 1)
    assert mvb.gold_letter([1, 2, 3], 3) == "C" and mvb.gold_letter(["3"], 3) == "@"  # raw ==, as official


def test_gold_string_keeps_the_official_gt_derivable(tmp_path):
    root = write_release(tmp_path, {"object_existence": [rec(candidates=["yes", "no", "yes"], answer="yes"),
                                                         rec(answer="green")]})
    dup, missing = mvb.load(root)
    assert mvb.gold_string(dup) == "(C) yes"
    assert missing.answer == "@" and mvb.gold_string(missing) == "(@) "
    assert official("A", missing).flags == ("gold_not_in_candidates",)


@pytest.mark.parametrize("bad, match", [
    ("[{", "invalid JSON"),
    ('{"video": "x"}', "expected a JSON list"),
    ("[1]", r"record 0: expected a JSON object"),
    (json.dumps([rec(), {"video": "b.mp4", "question": "q", "answer": "a"}]),
     r"record 1: missing field\(s\) 'candidates'"),
    (json.dumps([{**rec(), "candidates": "red, blue"}]), r"record 0 \(video v.mp4\): 'candidates' must be a list"),
])
def test_loader_errors_name_file_and_record(tmp_path, bad, match):
    root = write_release(tmp_path, {"object_existence": bad})
    with pytest.raises(DataError, match=match) as exc:
        mvb.load(root)
    assert str(root / "json" / "object_existence.json") in str(exc.value)


def test_bound_task_needs_numeric_start_and_end(tmp_path):
    root = write_release(tmp_path, {"action_localization": [rec(start=1.0)]})
    with pytest.raises(DataError, match=r"action_localization.json: record 0: missing field\(s\) 'end'"):
        mvb.load(root)
    root = write_release(tmp_path / "b", {"action_localization": [rec(start="00:01", end=3)]})
    with pytest.raises(DataError, match=r"record 0 \(video v.mp4\): 'start' must be a number"):
        mvb.load(root)


def test_missing_release_or_task_files(tmp_path):
    with pytest.raises(DataError, match="release folder not found"):
        mvb.load(tmp_path / "nowhere")
    (tmp_path / "json").mkdir()
    with pytest.raises(DataError, match=r"none of the 20 MVBench task files.*<root>/json/<task>.json"):
        mvb.load(tmp_path)


# --------------------------------------------------------------------------- prompt


def test_prompt_is_the_official_text():
    p = mvb.prompt(sample(options=("(A) red circle ", "(B) blue")), PromptContext())
    assert p.user == "Question: q\nOptions:\n(A) red circle \n(B) blue\nOnly give the best option."
    assert p.system.startswith("Carefully watch the video and pay attention to the cause and sequence of events")
    assert p.system.endswith("select the best option that accurately addresses the question.")
    assert p.assistant_prefix == "Best option:("
    last = mvb.prompt(sample(options=("(A) x", "(B) y  ")), PromptContext()).user
    assert last.endswith("(B) y\nOnly give the best option.")  # qa_template rstrips the block


# --------------------------------------------------------------------------- official check_ans


@pytest.mark.parametrize("raw", ["(A)", "A", "a.", "A)", "A) red circle", "a) red circle.", "A.", "\n A) red\nB"])
def test_official_substring_either_way_correct(raw):
    verdict = official(raw)
    assert verdict.correct is True and verdict.flags == ()


@pytest.mark.parametrize("raw", ["B", "(B)", "b.", "B) red circle", "Best option: (A)", "B\nA", "red circle"])
def test_official_wrong(raw):
    assert official(raw).correct is False


def test_official_paren_lowercase_against_gold_b():
    s = sample("B", ("(A) blue", "(B) red"))
    assert official("(b)", s).correct and official("b", s).correct and not official("a", s).correct
    assert mvb.check_ans("(b)", "(B) red") and mvb.check_ans("((b)", "(B) red")  # both directions


def test_official_prepends_paren_to_the_first_line():
    assert mvb.official_prediction("  A) red circle\nbecause …") == "(A) red circle"
    assert official("A) x").extraction.answer == "(a)" and official("(A)").extraction.answer == "((a)"
    assert official("A) x").extraction.rule == "mvbench_check_ans"


def test_official_splits_on_spaces_only():
    assert official("A\tred circle").correct is False  # "(a\tred" vs "(a)": neither contains the other
    assert official("A red circle").correct is True


@pytest.mark.parametrize("raw", ["", "   ", "\n\n"])
@pytest.mark.parametrize("gold", ["A", "B", "C"])
def test_official_empty_output_counted_correct_and_flagged(raw, gold):
    verdict = official(raw, sample(gold))
    assert verdict.correct is True
    assert verdict.flags == ("empty_output_counted_correct",) and verdict.extraction.answer is None


def test_official_dot_only_output_counted_correct_and_flagged():
    verdict = official(". the answer is B")
    assert verdict.correct is True and verdict.flags == ("vacuous_output_counted_correct",)


def test_official_token_with_two_letters_matches_either():
    assert official("(A)(B)", sample("A")).correct and official("(A)(B)", sample("B")).correct


# --------------------------------------------------------------------------- lmms-eval mode


def test_lmms_empty_output_is_excluded_not_counted_correct():
    verdict = lmms("")
    assert verdict.correct is None and verdict.flags == ("empty_output_excluded",)
    assert "empty_output_counted_correct" not in verdict.flags
    assert lmms("  ").correct is False  # only "" is left out of the denominator


@pytest.mark.parametrize("raw, correct", [
    ("A", True), ("a", True), ("(A) red circle", True), ("A. red circle", True), ("The answer is (A).", True),
    ("B", False), ("B. red circle", False), ("It is a cat", True), ("red circle", False),
])
def test_lmms_mcq_acc(raw, correct):
    assert lmms(raw).correct is correct  # "It is a cat" → the article "a" is read as option A


def test_lmms_gold_is_the_first_duplicate_official_the_last():
    s = sample("C", ("(A) yes", "(B) no", "(C) yes"))
    assert mvb.lmms_gold_letter(s) == "A"
    assert lmms("A", s).correct and not lmms("C", s).correct
    assert official("C", s).correct and not official("A", s).correct


def test_lmms_gold_not_in_candidates_counts_wrong_and_is_flagged():
    verdict = lmms("A", sample("@"))
    assert verdict.correct is False and verdict.flags == ("gold_not_in_candidates",)


def test_lmms_period_strip_count_quirk():
    assert mvb._process_punctuation("x." * 33).count(".") == 1  # re.UNICODE (32) passed as count
    assert mvb.mcq_process("A.") == "A" and mvb.mcq_process("A. b") == "A"


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="lmms-eval"):
        mvb.score("A", sample(), "vlmevalkit")


def test_rescoring_from_the_record_alone_gives_the_same_verdicts(tmp_path):
    from vamba_eval.records import SampleRecord
    from vamba_eval.run.api import sample_from_record

    records = [rec(candidates=["yes", "no", "yes"], answer="yes"), rec(answer="x")]
    for s in mvb.load(write_release(tmp_path, {"object_existence": records})):
        back = sample_from_record(SampleRecord(task="mvbench", sample_id=s.sample_id, video="v", video_key="v",
                                               gold=s.answer, options=list(s.options)))
        for raw, mode in [("A", "official"), ("C", "official"), ("", "official"), ("C", "lmms-eval")]:
            assert mvb.score(raw, back, mode) == mvb.score(raw, s, mode)


# --------------------------------------------------------------------------- aggregation


def _scored(task: str, i: int, raw: str, gold: str = "A", error: str | None = None):
    s = Sample("mvbench", f"{task}_{i}", VideoRef(f"{task}{i}.mp4"), "q", ("(A) x", "(B) y"), gold, {"task": (task,)})
    return scored_sample(s, None if error else mvb.score(raw, s, "official"), error)


def test_aggregate_per_task_and_micro_avg():
    scored = [_scored("Action Sequence", i, "A" if i < 3 else "B") for i in range(4)]
    scored += [_scored("Object Existence", 0, ""), _scored("Object Existence", 1, "B")]
    scored += [_scored("Object Existence", 2, "", error="VideoNotFound")]
    res = mvb.aggregate(scored, "official")
    per = res["breakdowns"]["task"]
    assert (per["Action Sequence"]["value"], per["Object Existence"]["value"]) == pytest.approx((75.0, 50.0))
    assert res["overall"]["correct"] == 4 and res["overall"]["n"] == 6  # Σcorrect/Σtotal, not the mean 62.5
    assert res["n_failed"] == 1 and res["n_flagged"] == {"empty_output_counted_correct": 1}
    board = mvb.leaderboard_json(res)
    assert list(board) == ["Action Sequence", "Object Existence", "Avg"]
    assert board["Avg"] == pytest.approx(400 / 6)


def test_aggregate_lmms_mode_leaves_empty_outputs_out():
    s = Sample("mvbench", "t_0", VideoRef("a.mp4"), "q", ("(A) x", "(B) y"), "A", {"task": ("Scene Transition",)})
    scored = [scored_sample(s, mvb.score(raw, s, "lmms-eval")) for raw in ("A", "", "B")]
    res = mvb.aggregate(scored, "lmms-eval")
    assert (res["overall"]["correct"], res["overall"]["n"]) == (1, 2)
    assert res["n_flagged"] == {"empty_output_excluded": 1}


# --------------------------------------------------------------------------- videos: bound, frame folders, missing


def _decode(s: Sample, n: int = 4):
    from vamba_eval.run.process import WorkUnit, decode

    return decode(WorkUnit("mvbench", s, FrameSpec(n, "mvbench_centre"), str(Path(s.video.path).parent)), None)


def test_bound_reaches_the_official_centres_in_a_video(tmp_path):
    root = write_release(tmp_path, {"action_sequence": [rec("A1.mp4", start=2.0, end=6.0)]})
    (root / "video" / "star" / "Charades_v1_480").mkdir(parents=True)
    vf.write_video(root / "video" / "star" / "Charades_v1_480" / "A1.mp4", 100, fps=10)
    video = _decode(mvb.load(root)[0])
    # get_index: start_idx = 20, end_idx = 60, seg = 10 → int(20 + 5 + round(10 i))
    assert video.indices == (25, 35, 45, 55) and [vf.read_index(f) for f in video.frames] == [25, 35, 45, 55]


def test_frame_folder_bound_uses_3_fps_and_1_based_files(tmp_path):
    root = write_release(tmp_path, {"episodic_reasoning": [rec("clip", start=2.0, end=6.0)]})
    clip = root / "video" / "tvqa" / "frames_fps3_hq" / "clip"
    clip.mkdir(parents=True)
    for i in range(30):  # 00001.jpg shows pattern(0) …
        vf.Image.fromarray(vf.pattern(i)).save(clip / f"{i + 1:05d}.jpg", quality=95)
    video = _decode(mvb.load(root)[0])
    # read_frame: start_idx = max(1, 6), end_idx = min(18, 30), seg 3 → files 00007, 00010, 00013, 00016
    assert video.indices == (6, 9, 12, 15) and [vf.read_index(f) for f in video.frames] == [6, 9, 12, 15]
    assert video.meta.fps == 3.0


@pytest.fixture(scope="module")
def pose_run(tmp_path_factory):
    """The executor path (decode → run_unit → record) for a missing video; it never reaches a model."""
    from vamba_eval.run.executor import run_local
    from vamba_eval.run.process import WorkUnit

    root = write_release(tmp_path_factory.mktemp("pose"), {"fine_grained_pose": [rec("S001_rgb.avi")]})
    units = [WorkUnit("mvbench", s, FrameSpec(2, "mvbench_centre"), str(root)) for s in mvb.load(root)]
    records: list = []
    run_local(units, {"mvbench": mvb.TASK}, None, records.append, use_subtitles=False, scoring="official",
              max_new_tokens={"mvbench": 4})
    return units[0].sample, records


def test_missing_pose_video_is_a_recorded_error(pose_run):
    s, (record,) = pose_run
    assert "NTU RGB+D" in s.meta["video_not_found_hint"] and "video/nturgbd" in s.meta["video_not_found_hint"]
    assert record.error.type == "VideoNotFound" and record.correct is None
    assert "nturgbd/S001_rgb.avi" in record.error.message


def test_missing_pose_video_error_says_the_user_must_fetch_it(pose_run):
    _, (record,) = pose_run
    assert "NTU RGB+D" in record.error.message


# --------------------------------------------------------------------------- demo + end to end


def test_demo_release_has_every_data_type(tmp_path):
    folder = mvb.write_demo(tmp_path / "demo", 0)
    samples = mvb.load(folder)
    assert len(samples) == len(mvb.DEMO_TASKS) * mvb.DEMO_ITEMS and (folder / "SYNTHETIC_DEMO.txt").is_file()
    assert all(Path(s.video.path).exists() for s in samples)
    gifs = [s for s in samples if s.video.path.endswith(".gif")]
    folders = [s for s in samples if Path(s.video.path).is_dir()]
    assert gifs and folders and all(s.video.fps == 3.0 for s in folders)
    assert all((Path(s.video.path) / "00001.jpg").is_file() for s in folders)
    bound = [s for s in samples if s.video.start is not None]
    assert {s.meta["subtask"] for s in bound} == {"action_sequence", "episodic_reasoning"}
    assert all(0 < s.video.start < s.video.end for s in bound)
    assert {s.meta["data_type"] for s in samples} == {"video", "frame"}
    assert all(official(s.answer, s).correct for s in samples)  # golds are consistent
    again = mvb.write_demo(tmp_path / "again", 0)
    for name in (folder / "json").iterdir():
        assert (again / "json" / name.name).read_bytes() == name.read_bytes()


def test_cli_run_on_the_demo_end_to_end(tmp_path, monkeypatch):
    from vamba_eval.cli import main

    monkeypatch.setenv("VAMBA_EVAL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    main(["run", "--tasks", "mvbench", "--frames", "8", "--output", str(out), "--no-report"])
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    n = len(mvb.DEMO_TASKS) * mvb.DEMO_ITEMS  # every container: mp4 (bound and not), gif, frame folder
    assert len(lines) == n and all(line["error"] is None for line in lines)
    assert all(len(line["frame_indices"]) == 8 and line["correct"] is not None for line in lines)
    assert {line["sample_id"].rsplit("_", 1)[0] for line in lines} == {t[0] for t in mvb.DEMO_TASKS}
    assert all(line["prompt"].endswith("Only give the best option.") for line in lines)
    result = json.loads((out / "results.json").read_text())["tasks"]["mvbench"]
    assert result["n"] == n and result["n_failed"] == 0 and len(result["breakdowns"]["task"]) == len(mvb.DEMO_TASKS)
