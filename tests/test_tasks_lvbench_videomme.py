"""LVBench + Video-MME adapters, the shared aggregation and the accuracy statistics.

Every quirk of shared/specs/benchmarks.md (LVBench, Video-MME) has its own test. Release folders
are written by the tests themselves (jsonl / parquet); nothing is downloaded.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from vamba_eval.aggregate import aggregate_accuracy
from vamba_eval.stats import accuracy_estimate, clustered_stderr, wilson_ci
from vamba_eval.task_api import DataError, PromptContext
from vamba_eval.taskutil import resolve_hub_folder, scored_sample, snapshot_revision
from vamba_eval.types import ScoredSample


def _task_module(name: str):
    try:
        return importlib.import_module(f"vamba_eval.tasks.{name}")
    except ImportError:
        return importlib.import_module(f"tasks.{name}")


lvbench = _task_module("lvbench")
videomme = _task_module("videomme")

# --------------------------------------------------------------------------- fixtures

Q4 = "What is shown first?\n(A) a cat\n(B) a dog\n(C) a bird\n(D) a fish"


def _qa(uid, answer="B", types=("reasoning",), question=Q4):
    return {"uid": uid, "question": question, "answer": answer, "question_type": list(types), "time_reference": "00:10-00:20"}


def _video(key, qa, genre="sport"):
    return {"key": key, "type": genre, "video_info": {"duration_minutes": 2.5, "fps": 30.0}, "qa": qa}


def write_lvbench(root: Path, videos) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "video_info.meta.jsonl", "w", encoding="utf-8") as f:
        for v in videos:
            f.write(json.dumps(v) + "\n")
    return root


@pytest.fixture
def lv_root(tmp_path):
    return write_lvbench(
        tmp_path / "lvbench",
        [
            _video("vidA", [_qa(1, "A", ("key information retrieval", "entity recognition")), _qa("2", "B", ("entity recognition",))]),
            _video("vidB", [_qa(3, "C", ("temporal grounding",))], genre="tv"),
        ],
    )


def _vm_row(i, video="001", vid="abc", duration="short", answer="A", task_type="Counting Problem", options=None):
    return {
        "video_id": video, "duration": duration, "domain": "Knowledge", "sub_category": "Astronomy",
        "url": f"https://www.youtube.com/watch?v={vid}", "videoID": vid, "question_id": f"{video}-{i}",
        "task_type": task_type, "question": f"How many planets? ({i})",
        "options": options or ["A. One.", "B. Two.", "C. Three.", "D. Four."], "answer": answer,
    }  # fmt: skip


def write_videomme(root: Path, rows, drop=()) -> Path:
    import pandas as pd

    (root / "videomme").mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows).drop(columns=list(drop))
    frame.to_parquet(root / "videomme" / "test-00000-of-00001.parquet")
    return root


SRT = """1
00:00:00,000 --> 00:00:02,000
<font color="white" size=".72c">hello there</font>

2
00:00:02,000 --> 00:00:05,500
<font color="white" size=".72c">second line</font>

3
00:00:10,000 --> 00:00:12,000
<font color="white" size=".72c">never sampled</font>
"""


@pytest.fixture
def vm_root(tmp_path):
    root = write_videomme(tmp_path / "vmme", [_vm_row(1), _vm_row(2, answer="C"), _vm_row(1, video="002", vid="xyz", duration="long")])
    (root / "subtitle").mkdir()
    (root / "subtitle" / "abc.srt").write_text(SRT, encoding="utf-8")
    return root


def _scored(sample_id, video, correct, cats=None, **kw):
    return ScoredSample(sample_id, video, cats or {}, "A" if correct else None, correct, **kw)


# --------------------------------------------------------------------------- LVBench loading


def test_lvbench_loads_meta_jsonl(lv_root):
    samples = lvbench.load(lv_root)
    assert [s.sample_id for s in samples] == ["1", "2", "3"]
    s = samples[0]
    assert s.question == "What is shown first?"
    assert s.options == ("(A) a cat", "(B) a dog", "(C) a bird", "(D) a fish")
    assert s.answer == "A"
    assert s.categories == {"question_type": ("KIR", "ER"), "type": ("sport",)}
    assert s.meta == {"video_id": "vidA", "uid": "1", "time_reference": "00:10-00:20", "duration": 150.0}
    assert s.video.path == str(lv_root / "videos" / "vidA.mp4")
    assert s.video_key == "vidA"
    assert lvbench.TASK.frames.num_frames == 1024 and lvbench.TASK.frames.max_edge == 560 and lvbench.TASK.frames.min_edge == 256
    assert lvbench.TASK.hub_id == "THUDM/LVBench"


def test_lvbench_uid_int_and_str_normalised(tmp_path):
    root = write_lvbench(tmp_path / "r", [_video("v", [_qa(7), _qa("8")])])
    assert [s.sample_id for s in lvbench.load(root)] == ["7", "8"]
    dup = write_lvbench(tmp_path / "d", [_video("v", [_qa(7)]), _video("w", [_qa("7")])])
    with pytest.raises(DataError, match=r"duplicate uid 7"):
        lvbench.load(dup)


@pytest.mark.parametrize("n_options", [3, 5])
def test_lvbench_wrong_option_count_names_file_line_uid(tmp_path, n_options):
    lines = "\n".join(f"({l}) opt {l}" for l in "ABCDE"[:n_options])
    root = write_lvbench(tmp_path / "r", [_video("v", [_qa(1)]), _video("w", [_qa(55, question="Q?\n" + lines)])])
    with pytest.raises(DataError) as err:
        lvbench.load(root)
    msg = str(err.value)
    assert "video_info.meta.jsonl" in msg and "line 2" in msg and "uid 55" in msg
    assert f"found {n_options}" in msg


def test_lvbench_answer_E_rejected(tmp_path):
    root = write_lvbench(tmp_path / "r", [_video("v", [_qa(9, answer="E")])])
    with pytest.raises(DataError, match=r"video_info\.meta\.jsonl: line 1 \(video v\) uid 9: answer 'E'"):
        lvbench.load(root)


def test_lvbench_missing_field_named(tmp_path):
    qa = _qa(4)
    del qa["answer"]
    root = write_lvbench(tmp_path / "r", [_video("v", [qa])])
    with pytest.raises(DataError, match=r"video_info\.meta\.jsonl: line 1 \(video v\) qa\[0\]: missing field\(s\) 'answer'"):
        lvbench.load(root)


def test_lvbench_unknown_question_type(tmp_path):
    root = write_lvbench(tmp_path / "r", [_video("v", [_qa(4, types=("counting",))])])
    with pytest.raises(DataError, match=r"uid 4: unknown question_type 'counting'"):
        lvbench.load(root)


def test_lvbench_wrong_layout(tmp_path):
    with pytest.raises(DataError, match=r"release folder not found.*video_info\.meta\.jsonl"):
        lvbench.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"neither video_info\.meta\.jsonl nor a parquet repack"):
        lvbench.load(tmp_path / "empty")


def test_lvbench_parquet_repack_matches_jsonl(tmp_path, lv_root):
    import pandas as pd

    rows = [
        {"uid": 1, "key": "vidA", "type": "sport", "question": Q4, "answer": "A",
         "question_type": ["key information retrieval", "entity recognition"], "time_reference": "00:10-00:20", "duration_minutes": 2.5},
        {"uid": 2, "key": "vidA", "type": "sport", "question": "What is shown first?", "answer": "B",
         "options": ["a cat", "a dog", "a bird", "a fish"], "question_type": ["entity recognition"],
         "time_reference": "00:10-00:20", "duration_minutes": 2.5},
        {"uid": 3, "key": "vidB", "type": "tv", "question": Q4, "answer": "C", "question_type": ["temporal grounding"],
         "time_reference": "00:10-00:20", "duration_minutes": 2.5},
    ]  # fmt: skip
    root = tmp_path / "repack"
    root.mkdir()
    pd.DataFrame(rows).to_parquet(root / "lvbench.parquet")
    got = lvbench.load(root)
    want = lvbench.load(lv_root)
    for g, w in zip(got, want):
        assert (g.sample_id, g.question, g.options, g.answer, dict(g.categories)) == (w.sample_id, w.question, w.options, w.answer, dict(w.categories))
        assert g.meta == w.meta and g.video.path == str(root / "videos" / f"{w.meta['video_id']}.mp4")


def test_lvbench_prompt_has_options_and_instruction(lv_root):
    s = lvbench.load(lv_root)[0]
    text = lvbench.prompt(s, PromptContext()).user
    assert text == Q4 + "\nAnswer with the option's letter from the given choices directly."


# --------------------------------------------------------------------------- LVBench scoring


@pytest.mark.parametrize(
    "raw, helper",
    [("(B) text", "B"), ("B. text", "B"), (" C", "C"), ("The answer is D", "T"), ("The answer is (D)", "D"), ("", ""), ("(b)", "b")],
)
def test_lvbench_official_helper(raw, helper):
    assert lvbench.polish_answer(raw) == helper


def test_lvbench_exact_string_equality(lv_root):
    s = lvbench.load(lv_root)[0]  # gold "A"
    lower = lvbench.score("a", s, "official")
    assert lower.correct is False and lower.extraction.answer is None and lower.extraction.rule == "lvbench_helper"
    assert lvbench.score("(A) a cat", s, "official").correct is True


def test_lvbench_non_letter_counts_wrong_and_in_denominator(lv_root):
    samples = lvbench.load(lv_root)
    scores = [lvbench.score(r, s, "official") for r, s in zip(["A", "The answer is B", "(C)"], samples)]
    assert [sc.correct for sc in scores] == [True, False, True]
    result = lvbench.aggregate([scored_sample(s, sc) for s, sc in zip(samples, scores)], "official")
    assert result["overall"]["n"] == 3 and result["overall"]["correct"] == 2
    assert result["n_unparsed"] == 1 and result["n_scored"] == 3


def test_lvbench_lmms_eval_mode_uses_videomme_regex(lv_root):
    s = lvbench.load(lv_root)[1]  # gold "B"
    sc = lvbench.score("The answer is B", s, "lmms-eval")
    assert sc.correct is True and sc.extraction.rule == "videomme_regex"
    empty = lvbench.score("no idea", s, "lmms-eval")
    assert empty.correct is False and empty.extraction.answer is None


def test_lvbench_multi_category_counts_toward_every_type(lv_root):
    samples = lvbench.load(lv_root)
    scores = [lvbench.score(r, s, "official") for r, s in zip(["A", "D", "C"], samples)]
    result = lvbench.aggregate([scored_sample(s, sc) for s, sc in zip(samples, scores)], "official")
    qt = result["breakdowns"]["question_type"]
    assert list(qt) == ["ER", "KIR", "TG"]  # sorted labels
    assert (qt["ER"]["correct"], qt["ER"]["n"]) == (1, 2)  # uid 1 (KIR+ER) and uid 2 (ER)
    assert (qt["KIR"]["correct"], qt["KIR"]["n"]) == (1, 1)
    assert result["overall"]["n"] == 3  # micro over questions, not over category memberships
    assert result["breakdowns"]["type"]["sport"]["n"] == 2
    board = lvbench.leaderboard_json(result)
    assert board["Overall"] == pytest.approx(2 / 3) and board["ER"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- Video-MME loading


def test_videomme_loads_parquet(vm_root):
    samples = videomme.load(vm_root)
    assert [s.sample_id for s in samples] == ["001-1", "001-2", "002-1"]
    s = samples[0]
    assert s.options == ("A. One.", "B. Two.", "C. Three.", "D. Four.")
    assert s.categories == {"duration": ("short",), "domain": ("Knowledge",), "sub_category": ("Astronomy",), "task_type": ("Counting Problem",)}
    assert s.meta == {"video_id": "001", "videoID": "abc", "duration": "short", "url": "https://www.youtube.com/watch?v=abc"}
    assert s.video.path == str(vm_root / "data" / "abc.mp4")
    assert s.subtitles == str(vm_root / "subtitle" / "abc.srt")
    assert samples[2].subtitles is None  # no subtitle file for xyz
    assert videomme.TASK.frames.num_frames == 512 and videomme.TASK.frames.max_edge == 480 and videomme.TASK.frames.demo_num_frames == 8


def test_videomme_missing_column_named(tmp_path):
    root = write_videomme(tmp_path / "r", [_vm_row(1)], drop=("task_type",))
    with pytest.raises(DataError, match=r"test-00000-of-00001\.parquet: missing column\(s\) 'task_type'"):
        videomme.load(root)


def test_videomme_answer_E_rejected(tmp_path):
    root = write_videomme(tmp_path / "r", [_vm_row(1), _vm_row(2, answer="E")])
    with pytest.raises(DataError, match=r"parquet: row 1 \(question_id 001-2\): answer 'E'"):
        videomme.load(root)


def test_videomme_three_options_rejected(tmp_path):
    root = write_videomme(tmp_path / "r", [_vm_row(1, options=["A. x", "B. y", "C. z"])])
    with pytest.raises(DataError, match=r"row 0 \(question_id 001-1\): 'options' must be a list of 4 strings, found 3"):
        videomme.load(root)


def test_videomme_wrong_layout(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "test-00000-of-00001.parquet").write_bytes(b"")  # at the root, not in videomme/
    with pytest.raises(DataError, match=r"videomme: no parquet file.*<root>/videomme/test-00000-of-00001\.parquet"):
        videomme.load(tmp_path / "r")


# --------------------------------------------------------------------------- Video-MME prompt


def test_videomme_official_prompt_without_subtitles(vm_root):
    s = videomme.load(vm_root)[0]
    assert videomme.prompt(s, PromptContext(frame_times=(1.0,))).user == (
        "Select the best answer to the following multiple-choice question based on the video. "
        "Respond with only the letter (A, B, C, or D) of the correct option.\n"
        "How many planets? (1)\nA. One.\nB. Two.\nC. Three.\nD. Four.\nThe best answer is:"
    )


def test_videomme_subtitles_only_at_sampled_times_deduplicated(vm_root):
    s = videomme.load(vm_root)[0]
    ctx = PromptContext(frame_times=(3.0, 0.5, 4.0, 7.0), use_subtitles=True)  # 3.0 and 4.0 hit cue 2; 7.0 hits none
    text = videomme.prompt(s, ctx).user
    assert text.startswith("This video's subtitles are listed below:\nhello there\nsecond line\nSelect the best answer")
    assert text.count("second line") == 1 and "never sampled" not in text
    assert videomme.subtitle_lines(s, (2.0,)) == ["second line"]  # cue end is exclusive, start inclusive
    no_srt = videomme.load(vm_root)[2]
    assert videomme.prompt(no_srt, ctx).user.startswith("Select the best answer")


# --------------------------------------------------------------------------- Video-MME extraction


def test_videomme_prefix_list_has_the_merged_entries():
    assert len(videomme.ANSWER_PREFIXES) == 6
    assert "The best option isThe correct option is" in videomme.ANSWER_PREFIXES
    assert "Best answer:Best option:" in videomme.ANSWER_PREFIXES
    assert "The best option is" not in videomme.ANSWER_PREFIXES and "Best answer:" not in videomme.ANSWER_PREFIXES


@pytest.mark.parametrize(
    "raw, letter",
    [
        ("The best option is B", "B"),  # not stripped, but its only capital A–D is B
        ("Best answer: C", "B"),  # not stripped (merged entry) → the 'B' of 'Best'
        ("Best option: D", "B"),
        ("Best answer:Best option: C", "C"),  # the merged entry itself IS stripped
        ("Based on the video, the answer is C", "B"),  # first uppercase A–D anywhere
        ("The answer is D.", "D"),
        ("(A) One.", "A"),
        ("", ""),
    ],
)
def test_videomme_official_extraction(raw, letter):
    assert videomme.extract_characters_regex(raw) == letter


def test_videomme_long_answer_without_letter_excluded_officially_wrong_in_lmms(vm_root):
    s = videomme.load(vm_root)[0]
    raw = "the video shows a person who is counting the planets in the night sky slowly"
    assert len(raw.split()) > 10 and videomme.extract_characters_regex(raw) == ""
    official = videomme.score(raw, s, "official")
    assert official.correct is None and official.extraction.answer is None
    lmms = videomme.score(raw, s, "lmms-eval")
    assert lmms.correct is False
    samples = videomme.load(vm_root)
    raws = [raw, "C", "A"]  # golds A, C, A
    for mode, n, value in [("official", 2, 100.0), ("lmms-eval", 3, 200 / 3)]:
        scored = [scored_sample(x, videomme.score(r, x, mode)) for r, x in zip(raws, samples)]
        result = videomme.aggregate(scored, mode)
        assert result["overall"]["n"] == n and result["overall"]["value"] == pytest.approx(value)
        assert result["n_unparsed"] == 1 and result["n_scored"] == n and result["scoring"] == mode
    assert any(note.startswith("official (1 decimal): overall 66.7; short 50.0; long 100.0") for note in result["notes"])


def test_videomme_results_file_is_valid_json(vm_root):
    samples = videomme.load(vm_root)
    data = videomme.results_file(samples, {"001-1": "A"})
    assert json.loads(json.dumps(data))[0]["questions"][0]["response"] == "A"
    assert [v["video_id"] for v in data] == ["001", "002"] and len(data[0]["questions"]) == 2


# --------------------------------------------------------------------------- hub helpers


def test_resolve_hub_folder_offline_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pytest.importorskip("huggingface_hub")
    with pytest.raises(DataError, match=r"lmms-lab/Video-MME@main: no usable snapshot.*local release folder"):
        resolve_hub_folder("lmms-lab/Video-MME", None)


def test_resolve_hub_folder_without_huggingface_hub(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(DataError, match=r"pip install huggingface_hub"):
        resolve_hub_folder("THUDM/LVBench", None)


def test_snapshot_revision_recorded(tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = tmp_path / "datasets--lmms-lab--Video-MME" / "snapshots" / commit
    write_videomme(root, [_vm_row(1)])
    assert snapshot_revision(root) == commit
    assert videomme.load(root)[0].meta["release_revision"] == commit


# --------------------------------------------------------------------------- statistics


def test_clustered_stderr_hand_computed():
    x = np.array([1, 0, 1, 1, 0], dtype=float)
    # x̄ = 0.6; per-cluster residual sums a: 0.4−0.6 = −0.2, b: 0.4, c: 0.4−0.6 = −0.2
    # SE = √(3/2 · (0.04 + 0.16 + 0.04)) / 5 = √0.36 / 5 = 0.12
    assert clustered_stderr(x, ["a", "a", "b", "c", "c"]) == pytest.approx(0.12)


def test_clustered_stderr_singletons_equal_plain_sd():
    rng = np.random.default_rng(0)
    x = (rng.random(37) < 0.6).astype(float)
    plain = x.std(ddof=1) / math.sqrt(x.size)
    assert clustered_stderr(x, [str(i) for i in range(x.size)]) == pytest.approx(plain, rel=1e-12)


def test_clustered_stderr_degenerate():
    assert math.isnan(clustered_stderr(np.array([1.0, 0.0]), ["v", "v"]))
    assert math.isnan(clustered_stderr(np.array([]), []))


def test_accuracy_estimate_rules():
    assert accuracy_estimate([], []).value is None
    one = accuracy_estimate([True, False, True], ["v", "v", "v"])  # one cluster → Wilson
    low, high = wilson_ci(2, 3)
    assert one.stderr is None and one.ci95 == pytest.approx([100 * low, 100 * high]) and one.n_clusters == 1
    est = accuracy_estimate([True, False, True, True, False], ["a", "a", "b", "c", "c"])
    assert est.value == pytest.approx(60.0) and est.stderr == pytest.approx(12.0)
    assert est.ci95 == pytest.approx([60 - 1.96 * 12, 60 + 1.96 * 12])
    clipped = accuracy_estimate([True, True, True, False], ["a", "b", "c", "d"])
    assert clipped.ci95[1] == 100.0
    assert wilson_ci(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)


# --------------------------------------------------------------------------- aggregation


def test_aggregate_counts():
    cats = {"axis": ("x", "y")}
    scored = [
        _scored("1", "v1", True, cats),
        _scored("2", "v1", False, {"axis": ("y",)}, unparsed=True),
        _scored("3", "v2", None, {"axis": ("z",)}, unparsed=True),  # excluded by the rule
        ScoredSample("4", "v3", {"axis": ("z",)}, None, None, error="VideoNotFound: …"),
        _scored("5", "v3", True, {"axis": ("x",)}, flags=("random_fallback",)),
    ]
    out = aggregate_accuracy(scored, task="t", title="T", scoring="official", breakdowns=("axis",), n_total=6, notes=("n1",))
    assert (out["n"], out["n_scored"], out["n_failed"], out["n_unparsed"]) == (6, 3, 1, 2)
    assert out["n_flagged"] == {"random_fallback": 1}
    assert out["overall"]["correct"] == 2 and out["overall"]["n"] == 3 and out["overall"]["n_clusters"] == 2
    axis = out["breakdowns"]["axis"]
    assert list(axis) == ["x", "y", "z"]
    assert (axis["x"]["n"], axis["y"]["n"], axis["z"]["n"], axis["z"]["value"]) == (2, 2, 0, None)
    assert out["notes"] == ["n1"]
