"""MLVU adapters: multiple choice (``mlvu``) and the judge-scored generation tasks (``mlvu_gen``).

Every quirk of shared/specs/benchmarks.md (MLVU) has its own test. Release folders are written by
the tests themselves; the LLM judge is a stand-in object with the ``chat`` method of
``vamba_eval.judge.Judge``. Nothing is downloaded.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from vamba_eval.records import Estimate, TaskResult
from vamba_eval.run.process import JudgeUnavailable
from vamba_eval.stats import macro_estimate, mean_estimate
from vamba_eval.task_api import DataError, PromptContext
from vamba_eval.taskutil import scored_sample
from vamba_eval.types import Sample, ScoredSample, VideoRef


def _task_module(name: str):
    try:
        return importlib.import_module(f"vamba_eval.tasks.{name}")
    except ImportError:
        return importlib.import_module(f"tasks.{name}")


mlvu = _task_module("mlvu")
mlvu_gen = _task_module("mlvu_gen")

STEMS = ("1_plotQA", "2_needle", "3_ego", "4_count", "5_order", "6_anomaly_reco", "7_topic_reasoning")


def _mc(video="v1.mp4", question="What colour is the hat?", candidates=("Yellow", "Red", "Green", "Blue"), answer="Red", qtype="plotQA"):
    return {"video": video, "duration": 246, "question": question, "candidates": list(candidates), "answer": answer, "question_type": qtype}


def write_dev(root: Path, overrides=None, gen=True) -> Path:
    """A dev release: every MC task one default record unless ``overrides[stem]`` gives the list."""
    overrides = overrides or {}
    (root / "json").mkdir(parents=True, exist_ok=True)
    for stem in STEMS:
        records = overrides.get(stem, [_mc(video=f"{stem}.mp4")])
        (root / "json" / f"{stem}.json").write_text(json.dumps(records), encoding="utf-8")
    if gen:
        sub = [{"video": "sub1.mp4", "duration": 600.0, "question": "Please describe the scene when\nthe man runs.",
                "answer": "The man runs to the car.", "question_type": "subPlot", "scoring_points": ["The man runs", "He reaches the car"]}]
        summ = [{"video": "sum1.mp4", "duration": 480.0, "question": "Please summarize this video, including its main content.",
                 "answer": "Waves hit the rocks.", "question_type": "summary"}]
        (root / "json" / "8_sub_scene.json").write_text(json.dumps(sub), encoding="utf-8")
        (root / "json" / "9_summary.json").write_text(json.dumps(summ), encoding="utf-8")
    return root


def _sample(options=("(A) Yellow", "(B) Red", "(C) Green", "(D) Blue"), answer="B", task="plotQA", split="dev", sid="s0", video="v"):
    return Sample(task="mlvu", sample_id=sid, video=VideoRef(video), question="Q?", options=tuple(options), answer=answer,
                  categories={"task": (task,), "split": (split,)}, meta={"video_id": video})


def _scored(task: str, correct: bool, i: int, split="dev") -> ScoredSample:
    return ScoredSample(f"{task}-{i}", f"{task}-video{i}", {"task": (task,), "split": (split,)}, "A", correct)


# --------------------------------------------------------------------------- loading


def test_dev_layout_loads_seven_tasks_with_official_labels(tmp_path):
    root = write_dev(tmp_path / "MLVU")
    (root / "video" / "1_plotQA").mkdir(parents=True)
    (root / "video" / "1_plotQA" / "1_plotQA.mp4").write_bytes(b"")
    (root / "video" / "count").mkdir(parents=True)  # the template's video/<task> folder name
    (root / "video" / "count" / "4_count.mp4").write_bytes(b"")
    samples = mlvu.load(root)
    assert [s.sample_id for s in samples] == [f"{stem}_0" for stem in STEMS]
    assert [s.categories["task"][0] for s in samples] == [
        "plotQA", "needle", "ego", "count", "order", "anomaly_reco", "topic_reasoning"]
    s = samples[0]
    assert s.options == ("(A) Yellow", "(B) Red", "(C) Green", "(D) Blue") and s.answer == "B"
    assert s.video.path == str(root / "video" / "1_plotQA" / "1_plotQA.mp4")
    assert samples[3].video.path == str(root / "video" / "count" / "4_count.mp4")
    assert samples[1].video.path == str(root / "video" / "2_needle" / "2_needle.mp4")  # absent: first candidate
    assert s.video_key == "1_plotQA/1_plotQA.mp4" and s.meta["duration"] == 246.0


def test_hub_snapshot_with_mlvu_subfolder(tmp_path):
    write_dev(tmp_path / "snap" / "MLVU")
    assert len(mlvu.load(tmp_path / "snap")) == 7


def test_prompt_is_the_official_template():
    p = mlvu.prompt(_sample(options=("(A) Yellow", "(B) Red", "(C) Green", "(D) Blue  ")), PromptContext())
    assert p.system == ("Carefully watch this video and pay attention to every detail. Based on your observations, "
                        "select the best option that accurately addresses the question.")
    assert p.user == "Question: Q?\nOptions:\n(A) Yellow\n(B) Red\n(C) Green\n(D) Blue\nOnly give the best option."
    assert p.assistant_prefix == "Best Option: ("


# --------------------------------------------------------------------------- the official check


@pytest.mark.parametrize("continuation, letter, correct", [
    ("B) Red", "B", True),        # the usual continuation of "Best Option: ("
    ("  B) Red", "B", True),      # the template strips the decoded text
    ("(B) Red", "B", True),       # char before the FIRST ")"
    ("B", "B", True),             # no ")": the whole continuation equals the letter
    ("C) Green", "C", False),
    (") B", None, False),         # ")" first: pred[-1:0] == ""
    ("Red", None, False),
])
def test_check_character_before_first_paren(continuation, letter, correct):
    score = mlvu.score(continuation, _sample(), "official")
    assert score.extraction.answer == letter and score.correct is correct


def test_a_dot_yellow_is_wrong():
    score = mlvu.score("A. Yellow", _sample(answer="A"), "official")
    assert score.correct is False and score.extraction.answer is None  # whole string ≠ "A"


def test_continuation_after_the_prefix_paren():
    # the assistant turn already ends with "(": the continuation "B" reads "Best Option: (B" → B
    assert mlvu.score("B", _sample(), "official").correct is True
    # a model that repeats the parenthesis without closing it is WRONG under check_ans
    assert mlvu.score("(B", _sample(), "official").correct is False
    assert mlvu.check_ans("(B", "B") == ("(B", False)


def test_answer_not_in_candidates_is_gold_at_sign_and_always_wrong(tmp_path):
    needle = [_mc(answer="Purple"), _mc(video="n2.mp4")]
    samples = mlvu.load(write_dev(tmp_path / "r", {"2_needle": needle}))
    s = next(x for x in samples if x.sample_id == "2_needle_0")
    assert s.answer == "@" and s.meta["quirks"] == ("answer_not_in_candidates",)
    results = {letter: mlvu.score(f"{letter})", s, "official") for letter in "ABCD"}
    assert all(r.correct is False for r in results.values())
    assert "answer_not_in_candidates" in results["A"].flags
    scored = [scored_sample(x, mlvu.score("B)", x, "official")) for x in samples]
    result = TaskResult.model_validate(mlvu.aggregate(scored, "official"))
    assert result.n_flagged["answer_not_in_candidates"] == 1
    assert any("1 answer not among candidates" in n for n in result.notes)


def test_duplicate_candidates_map_to_the_last_matching_index(tmp_path):
    count = [_mc(candidates=("2", "1", "2", "4"), answer="2", qtype="count")]
    s = next(x for x in mlvu.load(write_dev(tmp_path / "r", {"4_count": count})) if x.sample_id == "4_count_0")
    assert s.answer == "C"
    assert mlvu.score("C)", s, "official").correct is True
    assert mlvu.score("A)", s, "official").correct is False  # same text, earlier index: wrong
    assert set(mlvu.score("C)", s, "official").flags) == {"duplicate_candidates", "answer_duplicated_gold_last"}
    assert mlvu.gold_letter(["x", "x", "y", "z"], "y") == ("C", ("duplicate_candidates",))


def test_answer_compared_with_raw_equality():
    # qa_template's `c == answer`: a number never equals its string form
    assert mlvu.gold_letter([1, 2, 3, 4], "2")[0] == "@"
    assert mlvu.gold_letter([1, 2, 3, 4], 2)[0] == "B"


def test_flags_survive_rescoring_from_a_record():
    # `vamba-eval score` rebuilds the sample from options + gold only
    s = _sample(options=("(A) 2", "(B) 1", "(C) 2", "(D) 4"), answer="C")
    assert set(mlvu.score("C", s, "official").flags) == {"duplicate_candidates", "answer_duplicated_gold_last"}
    assert mlvu.score("A", _sample(answer="@"), "official").flags == ("answer_not_in_candidates",)


# --------------------------------------------------------------------------- test split


def _write_test(root: Path, with_answers=True) -> Path:
    recs = [{"video": "AWA-6.mp4", "duration": 450.0, "question": "Main background?", "question_id": "TR_0",
             "candidates": ["Grassland", "Lake", "Ocean", "Desert", "Forest", "City"], "answer": "Forest",
             "question_type": "topic_reasoning"},
            {"video": "sports_1.mp4", "duration": 300.0, "question": "Who scores?", "question_id": "SQA_0",
             "candidates": ["a", "b", "c", "d", "e", "f"], "answer": "f", "question_type": "sportsQA"}]
    if with_answers:
        (root / "test-ground-truth").mkdir(parents=True)
        (root / "test-ground-truth" / "test_mcq_gt.json").write_text(json.dumps(recs), encoding="utf-8")
    else:
        (root / "leaderboard").mkdir(parents=True)
        for r in recs:
            r.pop("answer")
        (root / "leaderboard" / "test_question.json").write_text(json.dumps(recs), encoding="utf-8")
    return root


def test_test_split_six_options_allow_e_and_f(tmp_path):
    samples = mlvu.load(_write_test(tmp_path / "MLVU_Test"))
    tr, sqa = samples
    assert (tr.sample_id, tr.answer, tr.categories["task"]) == ("TR_0", "E", ("topic_reasoning",))
    assert tr.options[-1] == "(F) City" and sqa.answer == "F"
    assert tr.video.path == str(tmp_path / "MLVU_Test" / "video" / "AWA-6.mp4")
    assert mlvu.score("E) Forest", tr, "official").correct is True
    assert mlvu.score("F", sqa, "official").extraction.answer == "F"
    # on a 4-option dev question E is no option letter
    dev = mlvu.score("E)", _sample(), "official")
    assert dev.extraction.answer is None and dev.correct is False


def test_unlabelled_test_split_and_submission(tmp_path):
    samples = mlvu.load(_write_test(tmp_path / "t", with_answers=False))
    assert all(s.answer == "" for s in samples)
    score = mlvu.score("B) Lake", samples[0], "official")
    assert score.correct is None and "unlabelled" in score.flags
    result = mlvu.aggregate([scored_sample(s, mlvu.score("B)", s, "official")) for s in samples], "official")
    assert result["overall"]["value"] is None and any("submission()" in n for n in result["notes"])
    records = [
        {"task": "mlvu", "sample_id": "TR_0", "categories": {"task": ["topic_reasoning"]}, "response": "(B) Lake"},
        {"task": "mlvu", "sample_id": "SQA_0", "categories": {"task": ["sportsQA"]}, "response": " E) e "},
        {"task": "mlvu", "sample_id": "AR_0", "categories": {"task": ["anomaly_reco"]}, "response": None,
         "error": {"type": "VideoNotFound", "message": "x"}},
        {"task": "videomme", "sample_id": "001-1", "categories": {}, "response": "A"},
    ]
    assert mlvu.submission(records) == [
        {"question_id": "TR_0", "question_type": "topic_reasoning", "option": "(B"},  # test_bench.py: text before ")"
        {"question_id": "SQA_0", "question_type": "sportsQA", "option": "E"},
        {"question_id": "AR_0", "question_type": "anomaly_reco", "option": ""},
    ]
    assert mlvu.submission(records[:1], rule="check_ans")[0]["option"] == "B"


# --------------------------------------------------------------------------- aggregation


def test_m_avg_is_macro_not_micro():
    scored = [_scored("plotQA", True, 0)] + [_scored("count", i == 0, i) for i in range(4)]
    result = TaskResult.model_validate(mlvu.aggregate(scored, "official"))
    assert result.breakdowns["task"]["plotQA"].value == 100.0 and result.breakdowns["task"]["count"].value == 25.0
    assert result.overall.value == pytest.approx(62.5)  # (100 + 25) / 2, not 2/5 = 40
    assert result.metric == "M-Avg"
    assert any("VLMEvalKit-style pooled (not official): 40.00% (2/5)" in n for n in result.notes)
    assert any(n.startswith("overall = M-Avg") for n in result.notes)


def test_lmms_eval_mode_divides_by_all_seven_types():
    scored = [_scored("plotQA", True, 0)] + [_scored("count", i == 0, i) for i in range(4)]
    result = mlvu.aggregate(scored, "lmms-eval")
    assert result["overall"]["value"] == pytest.approx(125.0 / 7)
    test = [_scored("sportsQA", True, 0, split="test")]
    assert mlvu.aggregate(test, "lmms-eval")["overall"]["value"] == pytest.approx(100.0 / 9)


def test_failed_task_is_left_out_of_m_avg():
    failed = ScoredSample("x", "vx", {"task": ("ego",), "split": ("dev",)}, None, None, error="VideoNotFound")
    result = mlvu.aggregate([_scored("plotQA", True, 0), _scored("plotQA", False, 1), failed], "official")
    assert result["overall"]["value"] == 50.0 and result["n_failed"] == 1
    assert any("left out of M-Avg: ego" in n for n in result["notes"])


# --------------------------------------------------------------------------- data errors


@pytest.mark.parametrize("record, needle", [
    ({"video": "a.mp4", "question": "Q", "answer": "x"}, "missing field(s) 'candidates'"),
    ({"video": "a.mp4", "question": "Q", "candidates": "x, y", "answer": "x"}, "'candidates' must be a list"),
    ({"video": "a.mp4", "question": "Q", "candidates": ["x", None], "answer": "x"}, "is not text or a number"),
    ({"video": "", "question": "Q", "candidates": ["x", "y"], "answer": "x"}, "field 'video' must be a non-empty string"),
    ({"video": "a.mp4", "question": "Q", "candidates": ["x", "y"], "answer": "x", "duration": "long"}, "'duration' must be seconds"),
])
def test_data_errors_name_the_file_and_record(tmp_path, record, needle):
    root = write_dev(tmp_path / "r", {"3_ego": [_mc(), _mc(), record]})
    with pytest.raises(DataError) as err:
        mlvu.load(root)
    text = str(err.value)
    assert str(root / "json" / "3_ego.json") in text and "record 2" in text and needle in text


def test_missing_task_file_and_bad_json(tmp_path):
    root = write_dev(tmp_path / "r")
    (root / "json" / "5_order.json").unlink()
    with pytest.raises(DataError, match="5_order.json: missing"):
        mlvu.load(root)
    write_dev(root)
    (root / "json" / "6_anomaly_reco.json").write_text("[{", encoding="utf-8")
    with pytest.raises(DataError, match=r"6_anomaly_reco.json: invalid JSON"):
        mlvu.load(root)
    (root / "json" / "6_anomaly_reco.json").write_text("{}", encoding="utf-8")
    with pytest.raises(DataError, match="expected a JSON list"):
        mlvu.load(root)
    with pytest.raises(DataError, match="no MLVU release here"):
        mlvu.load(tmp_path)


def test_duplicate_question_ids_on_the_test_split(tmp_path):
    root = _write_test(tmp_path / "t")
    path = root / "test-ground-truth" / "test_mcq_gt.json"
    recs = json.loads(path.read_text())
    recs[1]["question_id"] = "TR_0"
    path.write_text(json.dumps(recs))
    with pytest.raises(DataError, match=r"record 1 \(question_id TR_0.*duplicate sample id TR_0"):
        mlvu.load(root)


# --------------------------------------------------------------------------- generation tasks


class StandInJudge:
    """The ``chat`` interface of vamba_eval.judge.Judge, replying with canned texts."""

    def __init__(self, replies, prompts_dir=None):
        self.replies, self.calls = list(replies), []
        self.config = SimpleNamespace(prompts_dir=prompts_dir)

    def chat(self, messages, *, temperature=None, max_tokens=None, **kw):
        self.calls.append({"messages": messages, "temperature": temperature, "max_tokens": max_tokens})
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return SimpleNamespace(text=reply, to_record=lambda: {"text": reply, "model": "stand-in"})


@pytest.fixture
def gen_samples(tmp_path, monkeypatch):
    monkeypatch.delenv(mlvu_gen.PROMPTS_ENV, raising=False)
    return mlvu_gen.load(write_dev(tmp_path / "r"))


def test_gen_loader_and_prompt(gen_samples):
    sub, summ = gen_samples
    assert (sub.sample_id, sub.categories["task"], summ.categories["task"]) == ("8_sub_scene_0", ("sub_scene",), ("summary",))
    assert sub.meta["scoring_points"] == ("The man runs", "He reaches the car") and summ.meta["reference"] == "Waves hit the rocks."
    p = mlvu_gen.prompt(summ, PromptContext())
    assert p.user == summ.question and p.assistant_prefix == ""
    assert p.system.endswith("Based on your observations, answer the given questions.")


def test_gen_sub_scene_needs_scoring_points(tmp_path):
    root = write_dev(tmp_path / "r")
    (root / "json" / "8_sub_scene.json").write_text(json.dumps([{"video": "a.mp4", "question": "Q", "answer": "A"}]))
    with pytest.raises(DataError, match=r"8_sub_scene.json: record 0 \(video a.mp4\): missing field\(s\) 'scoring_points'"):
        mlvu_gen.load(root)


def test_judge_scores_parsed_and_summed(gen_samples):
    sub, summ = gen_samples
    judge = StandInJudge(["Point 1 … {'score_accuracy': 3.5, 'score_relevance': 4, 'total_score': 7.5}",
                          '{"score_completeness": 2, "score_reliability": 5, "total_score": 7}'])
    s1 = mlvu_gen.judge_score("  The man runs.  ", sub, "official", judge)
    s2 = mlvu_gen.judge_score("Waves.", summ, "official", judge)
    assert (s1.value, s1.extraction.answer, s1.flags) == (7.5, "accuracy=3.5;relevance=4", ())
    assert (s2.value, s2.extraction.answer) == (7.0, "completeness=2;reliability=5")
    call = judge.calls[0]
    assert call["temperature"] == 0
    system, user = call["messages"][0]["content"], call["messages"][1]["content"]
    assert "score_accuracy" in system and "Please describe the scene whenthe man runs." in user  # newlines removed
    assert "['The man runs', 'He reaches the car']" in user and "The man runs." in user
    assert "Waves hit the rocks." in judge.calls[1]["messages"][1]["content"]
    assert s1.judge["prompt_source"] == mlvu_gen.PARAPHRASE_LABEL and "not the MLVU authors' text" in s1.judge["prompt_source"]
    assert s1.judge["reply"]["model"] == "stand-in"


def test_failed_judge_parse_counts_zero_and_is_flagged(gen_samples):
    sub, _ = gen_samples
    judge = StandInJudge(["I cannot grade this.", "{'score_relevance': 4, 'total_score': 4}", "{'score_accuracy':4, 'x': 1}"])
    none = mlvu_gen.judge_score("x", sub, "official", judge)
    assert none.value == 0.0 and none.extraction.answer is None and "judge_missing_scores_counted_0" in none.flags
    only_rel = mlvu_gen.judge_score("x", sub, "official", judge)  # calculate.py: scores[0] → accuracy
    assert only_rel.value == 4.0 and only_rel.extraction.answer == "accuracy=4"
    crash = mlvu_gen.judge_score("x", sub, "official", judge)  # ":4," → float("") — calculate.py crashes
    assert crash.value == 0.0 and {"judge_parse_error", "judge_missing_scores_counted_0"} <= set(crash.flags)


def test_judge_unavailable_propagates_to_the_runner(gen_samples):
    judge = StandInJudge([JudgeUnavailable("judge down after 4 attempts")])
    with pytest.raises(JudgeUnavailable):
        mlvu_gen.judge_score("x", gen_samples[0], "official", judge)
    with pytest.raises(JudgeUnavailable):
        mlvu_gen.score("x", gen_samples[0], "official")


def test_authors_prompts_from_a_folder(gen_samples, tmp_path, monkeypatch):
    folder = tmp_path / "prompts"
    (folder / "mlvu").mkdir(parents=True)
    (folder / "mlvu" / "summary_system.txt").write_text("RUBRIC {'score_completeness': c, 'score_reliability': r}")
    (folder / "mlvu" / "summary_user.txt").write_text("Standard Answer: {answer}\nRespondent's Answer: {pred} {other}")
    judge = StandInJudge(["{'score_completeness': 3, 'score_reliability': 3, 'total_score': 6}"], prompts_dir=str(folder))
    verdict = mlvu_gen.judge_score("Waves.", gen_samples[1], "official", judge)
    msgs = judge.calls[0]["messages"]
    assert msgs[0]["content"].startswith("RUBRIC {'score_completeness'")
    assert msgs[1]["content"] == "Standard Answer: Waves hit the rocks.\nRespondent's Answer: Waves. {other}"
    assert verdict.judge["prompt_source"].startswith("file:") and verdict.value == 6.0
    monkeypatch.setenv(mlvu_gen.PROMPTS_ENV, str(folder))  # the env var reaches a judge without a folder
    assert mlvu_gen.judge_prompt("summary", StandInJudge([])).source.startswith("file:")
    with pytest.raises(JudgeUnavailable, match="sub_scene_system.txt"):  # configured folder, file missing
        mlvu_gen.judge_prompt("sub_scene", StandInJudge([]))


def test_g_avg_is_the_mean_of_the_two_task_scores():
    def g(task, i, score, extracted, flags=()):
        return ScoredSample(f"{task}{i}", f"{task}-v{i}", {"task": (task,)}, extracted, None, flags=flags, score=score)

    scored = [g("sub_scene", 0, 8.0, "accuracy=4;relevance=4"), g("sub_scene", 1, 6.0, "accuracy=3;relevance=3"),
              g("sub_scene", 2, 0.0, None, ("judge_missing_scores_counted_0",)),
              g("summary", 0, 5.0, "completeness=2;reliability=3"),
              ScoredSample("x", "v", {"task": ("summary",)}, None, None, error="JudgeUnavailable")]
    result = TaskResult.model_validate(mlvu_gen.aggregate(scored, "official"))
    assert result.breakdowns["task"]["sub_scene"].value == pytest.approx(14 / 3)
    assert result.overall.value == pytest.approx((14 / 3 + 5.0) / 2) and result.metric == "G-Avg"
    assert result.breakdowns["dimension"]["sub_scene/accuracy"].value == pytest.approx(7 / 3)  # failed = 0
    assert (result.n_scored, result.n_failed, result.n_unparsed) == (4, 1, 1)
    assert result.n_flagged == {"judge_missing_scores_counted_0": 1}


# --------------------------------------------------------------------------- statistics + demo


def test_mean_and_macro_estimates():
    est = mean_estimate([2.0, 4.0, 6.0, 8.0], ["a", "a", "b", "c"])
    assert est.value == 5.0 and est.correct is None and est.n_clusters == 3 and est.stderr > 0
    assert est.ci95 == pytest.approx([5.0 - 1.96 * est.stderr, 5.0 + 1.96 * est.stderr])
    assert mean_estimate([], []).value is None and mean_estimate([3.0], ["a"]).stderr is None
    parts = [Estimate(value=100.0, n=1, stderr=3.0, n_clusters=1), Estimate(value=25.0, n=4, stderr=4.0, n_clusters=4)]
    macro = macro_estimate(parts, bounds=(0.0, 100.0))
    assert macro.value == 62.5 and macro.stderr == pytest.approx(2.5) and macro.n == 5
    assert macro_estimate(parts, divisor=7).value == pytest.approx(125 / 7)
    assert math.isclose(macro_estimate(parts + [Estimate(value=None, n=0)]).value, 62.5)


def test_demo_releases_load(tmp_path):
    folder = mlvu.write_demo(tmp_path / "mc", 0)
    samples = mlvu.load(folder)
    assert {s.categories["task"][0] for s in samples} == set(mlvu.LMMS_TYPES["dev"])
    assert all(Path(s.video.path).is_file() and s.answer in "ABCD" and not s.meta["quirks"] for s in samples)
    assert all(mlvu.score(f"{s.answer}) x", s, "official").correct for s in samples)
    assert (folder / "SYNTHETIC_DEMO.txt").is_file()
    gen = mlvu_gen.load(mlvu_gen.write_demo(tmp_path / "gen", 0))
    assert {s.categories["task"][0] for s in gen} == {"sub_scene", "summary"}
    assert all(Path(s.video.path).is_file() for s in gen)
    assert all(s.meta["scoring_points"] for s in gen if s.categories["task"] == ("sub_scene",))


def test_judge_verdict_through_the_runner_record(gen_samples):
    from vamba_eval.records import SampleRecord
    from vamba_eval.run.process import score_fields

    judge = StandInJudge(["{'score_accuracy': 5, 'score_relevance': 4, 'total_score': 9}"])
    fields = score_fields(mlvu_gen.TASK, gen_samples[0], "The man runs.", "official", judge)
    rec = SampleRecord(task="mlvu_gen", sample_id="8_sub_scene_0", video="v", video_key="k", response="x", **fields)
    assert (rec.score, rec.correct, rec.unparsed, rec.extracted) == (9.0, None, False, "accuracy=5;relevance=4")
    assert json.loads(rec.model_dump_json())["judge"]["scores"] == {"accuracy": 5.0, "relevance": 4.0}
