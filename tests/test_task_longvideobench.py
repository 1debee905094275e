"""LongVideoBench adapter (tasks/longvideobench.py) and the Prompt.interleave contract in both model adapters.

Release folders are written by the tests (JSON / parquet / subtitle JSON); interleaving cases are
computed by hand from ``insert_subtitles_into_frames`` (longvideobench/LongVideoBench); nothing is
downloaded.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vamba_eval.models.base import ModelSpec, frame_groups, prepend_interleave, qwen_chat
from vamba_eval.task_api import DataError, PromptContext
from vamba_eval.taskutil import scored_sample
from vamba_eval.types import Prompt, Request
from vamba_eval.tasks import longvideobench as lvb
from vamba_eval.tasks._lvb_io import load_cues

# --------------------------------------------------------------------------- hand-made releases


def rec(k=0, vid="vidAAAAAAAA", cands=("a cat", "a dog", "a bird", "a fish"), choice=1, **extra):
    r = {"video_id": vid, "question": f"What is shown {k}?", "question_wo_referring_query": "What?",
         "candidates": list(cands), "correct_choice": choice, "position": [3], "topic_category": "KS-Knowledge",
         "question_category": "S2O", "level": "L1-Perception", "id": f"{vid}_{k}", "video_path": f"{vid}.mp4",
         "subtitle_path": f"{vid}_en.json", "duration_group": 15, "starting_timestamp_for_subtitles": 0,
         "duration": 12.0, "view_count": 7}
    r.update(extra)
    return {k2: v for k2, v in r.items() if v is not None}


def write_release(root: Path, val=None, test=None, subs=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if val is not None:
        (root / "lvb_val.json").write_text(json.dumps(val))
    if test is not None:
        (root / "lvb_test_wo_gt.json").write_text(json.dumps(test))
    for name, cues in (subs or {}).items():
        (root / "subtitles").mkdir(exist_ok=True)
        (root / "subtitles" / name).write_text(json.dumps(cues))
    return root


@pytest.fixture
def root(tmp_path):
    five = rec(1, cands=("red", "green", "blue", "white", "none of these"), choice=4)
    return write_release(tmp_path / "lvb", val=[rec(0), five], test=[rec(5, choice=None)],
                         subs={"vidAAAAAAAA_en.json": [{"timestamp": [1.0, 3.0], "text": " hello"}]})


# --------------------------------------------------------------------------- loading


def test_loads_val_with_4_and_5_options(root):
    s4, s5 = lvb.load(root)
    assert s4.sample_id == "vidAAAAAAAA_0" and s4.answer == "B" and s4.task == "longvideobench"
    assert s4.options == ("A. a cat", "B. a dog", "C. a bird", "D. a fish")
    assert s5.options[-1] == "E. none of these" and s5.answer == "E"
    assert s4.categories == {"duration_group": ("15",), "question_category": ("S2O",),
                             "level": ("L1-Perception",), "topic_category": ("KS-Knowledge",)}
    assert s4.video.path == str(root / "videos" / "vidAAAAAAAA.mp4")
    assert s4.subtitles == str(root / "subtitles" / "vidAAAAAAAA_en.json")
    assert s4.video_key == "vidAAAAAAAA" and s4.meta["duration_s"] == 12.0 and s4.meta["split"] == "validation"


def test_test_split_has_no_labels_and_gives_a_submission(root):
    (s,) = lvb.load_test(root)
    assert s.answer == "" and s.task == "longvideobench_test"
    verdict = lvb.score("C", s, "official")
    assert verdict.correct is None and verdict.extraction.answer == "C"
    result = lvb.aggregate([scored_sample(s, verdict)], "official")
    assert result["overall"]["value"] is None and result["n_scored"] == 0
    assert any("test split" in n for n in result["notes"])
    records = [{"sample_id": s.sample_id, "response": " C. a bird", "error": None},
               {"sample_id": "x_1", "response": None, "error": {"type": "VideoNotFound", "message": "m"}}]
    assert lvb.submission(records) == {"vidAAAAAAAA_5": " C. a bird"}


def test_parquet_copy_with_option_columns(tmp_path):
    rows = []
    for r, n in ((rec(0), 4), (rec(1, cands=tuple("vwxyz"), choice=4), 5)):
        row = {k: v for k, v in r.items() if k != "candidates"}
        row.update({f"option{i}": (r["candidates"][i] if i < n else "N/A") for i in range(5)})
        rows.append(row)
    (tmp_path / "data").mkdir()
    pd.DataFrame(rows).to_parquet(tmp_path / "data" / "validation-00000-of-00001.parquet", index=False)
    a, b = lvb.load(tmp_path)
    assert a.options == ("A. a cat", "B. a dog", "C. a bird", "D. a fish") and a.answer == "B"
    assert len(b.options) == 5 and b.answer == "E" and a.meta["position"] == [3]
    row = dict(rows[0], option2="N/A")
    pd.DataFrame([row]).to_parquet(tmp_path / "data" / "validation-00000-of-00001.parquet", index=False)
    with pytest.raises(DataError, match=r"record 0 \(id vidAAAAAAAA_0\): an option follows an absent one"):
        lvb.load(tmp_path)


@pytest.mark.parametrize("bad, pattern", [
    (rec(0, question=None), r"lvb_val.json: record 0 \(id vidAAAAAAAA_0\): missing field\(s\) 'question'"),
    (rec(0, choice=4), r"correct_choice 4 is not a 0-based index into its 4 candidates"),
    (rec(0, choice=None), r"missing 'correct_choice' in the validation split"),
    (rec(0, cands=tuple("uvwxyz")), r"6 candidates; LongVideoBench items have 4 or 5"),
    (rec(0, candidates=None), r"missing field 'candidates' \(or option0..option4\)"),
    (rec(0, duration="long"), r"'duration' and 'starting_timestamp_for_subtitles' must be numbers"),
])  # fmt: skip
def test_bad_records_name_file_record_and_fix(tmp_path, bad, pattern):
    write_release(tmp_path, val=[bad])
    with pytest.raises(DataError, match=pattern):
        lvb.load(tmp_path)


def test_release_level_errors(tmp_path):
    with pytest.raises(DataError, match="release folder not found"):
        lvb.load(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"neither lvb_val.json nor validation-\*.parquet"):
        lvb.load(tmp_path)
    (tmp_path / "lvb_val.json").write_text("{oops")
    with pytest.raises(DataError, match="lvb_val.json: invalid JSON"):
        lvb.load(tmp_path)
    (tmp_path / "lvb_val.json").write_text(json.dumps({"not": "a list"}))
    with pytest.raises(DataError, match="expected a JSON list of question records"):
        lvb.load(tmp_path)
    (tmp_path / "lvb_val.json").write_text(json.dumps([rec(0), rec(0)]))
    with pytest.raises(DataError, match="duplicate id vidAAAAAAAA_0"):
        lvb.load(tmp_path)


# --------------------------------------------------------------------------- subtitles and interleaving


def test_subtitle_forms_shift_and_open_end(tmp_path):
    whisper = tmp_path / "w.json"
    whisper.write_text(json.dumps([{"timestamp": [10.0, 12.5], "text": " one"},
                                   {"timestamp": [13.0, 14], "text": "int end"},  # official quirk: not a float
                                   {"timestamp": [15.0, None], "text": "open"}]))
    assert load_cues(str(whisper), 60.0, 10.0) == ((0.0, 2.5, " one"), (3.0, 50.0, "int end"), (5.0, 50.0, "open"))
    youtube = tmp_path / "y.json"
    youtube.write_text(json.dumps([{"start": "00:01:02.500", "end": "01:00:00.250", "line": "hi"}]))
    assert load_cues(str(youtube), 0.0, 2.5) == ((60.0, 3597.75, "hi"),)
    youtube.write_text(json.dumps([{"start": "00:01:02,500", "end": "00:01:03.000", "line": "x"}]))
    with pytest.raises(DataError, match=r"y.json: cue 0: bad time '00:01:02,500'"):
        load_cues(str(youtube), 0.0, 0.0)
    with pytest.raises(DataError, match="cannot read subtitle file"):
        load_cues(str(tmp_path / "missing.json"), 0.0, 0.0)


def test_interleave_hand_computed():
    times = (0.0, 2.0, 4.0, 6.0, 8.0)
    cues = [
        (1.0, 3.0, "a"),   # midpoint 2 → frames 0, 2 first; 2 lies inside → after 2 frames
        (6.3, 6.5, "b"),   # 0.2 s: widened to 5.9–6.9 (midpoint 6.4 → frames 4, 6 first); 6 inside → after 4
        (6.6, 7.9, "c"),   # 1.3 s, no frame strictly inside → dropped
        (8.0, 9.5, "d"),   # frame 8 sits ON the start: not strictly inside → dropped, but 8 ≤ 8.75 is emitted
    ]  # fmt: skip
    assert lvb.interleave(times, cues) == ((2, "a"), (4, "b"))
    # any frame counts, not only the newly emitted ones; trailing frames come after the last text
    assert lvb.interleave((0.0, 10.0, 30.0), [(0.5, 20.0, "long"), (9.0, 11.0, "x")]) == ((2, "long"), (2, "x"))
    assert lvb.interleave((0.0, 10.0), [(0.2, 0.4, "widened")]) == ((1, "widened"),)  # 0.3 ± 0.5 covers 0
    assert lvb.interleave((5.0,), [(0.0, 1.0, "early")]) == ()


def test_prompt_wording_and_subtitles_flag(root, tmp_path):
    s4, s5 = lvb.load(root)
    plain = lvb.prompt(s5, PromptContext((0.0, 2.0, 4.0), use_subtitles=False))
    assert plain.user == ("Question: What is shown 1?\nA. red\nB. green\nC. blue\nD. white\nE. none of these\n"
                          "Answer with the option's letter from the given choices directly.")
    assert plain.interleave == () and plain.system is None and plain.assistant_prefix == ""
    subbed = lvb.prompt(s4, PromptContext((0.0, 2.0, 4.0), use_subtitles=True))
    assert subbed.user == plain.user.replace("1?", "0?").replace(
        "A. red\nB. green\nC. blue\nD. white\nE. none of these", "\n".join(s4.options))
    assert subbed.interleave == ((2, " hello"),)
    (root / "subtitles" / "vidAAAAAAAA_en.json").unlink()
    with pytest.raises(DataError, match="vidAAAAAAAA_en.json: cannot read subtitle file"):
        lvb.prompt(lvb.load(root)[0], PromptContext((0.0,), use_subtitles=True))


# --------------------------------------------------------------------------- the author's parser


@pytest.mark.parametrize("raw, letter", [
    ("B", "B"), ("The answer is C.", "C"), ("(D) a fish", "D"), ("D. A book", "D"),
    ("Best answer: C", "C"),            # the prefix list has its commas (Video-MME's would give B)
    ("The best option is A", "A"), ("Based on the video", "B"),  # first uppercase A–E anywhere
    ("E", "E"),                         # not a valid option of a 4-option item: kept, hence wrong
])  # fmt: skip
def test_parser_takes_the_first_letter(root, raw, letter):
    s4 = lvb.load(root)[0]
    verdict = lvb.score(raw, s4, "official")
    assert verdict.extraction.answer == letter and verdict.extraction.fallback is None and verdict.flags == ()
    assert verdict.correct is (letter == "B")


@pytest.mark.parametrize("raw, why", [
    ("", "random:no_letter"), ("i think so", "random:no_letter"),
    ("the video shows a small cat that sits on the mat all day", "random:long_without_letter"),
])  # fmt: skip
def test_random_fallback_is_seeded_flagged_and_counted(root, raw, why):
    s4 = lvb.load(root)[0]
    first = lvb.score(raw, s4, "official")
    assert first.extraction.fallback == why and first.flags == ("random_fallback",)
    assert first.extraction.answer in "ABCD"
    assert all(lvb.score(raw, s4, mode) == first for mode in ("official", "lmms-eval"))  # deterministic
    letters = Counter(lvb.parse_multi_choice_response(raw, "ABCD", lvb.fallback_rng(f"v_{i}"))[0] for i in range(200))
    assert set(letters) == set("ABCD")  # valid letters only, all of them reachable


def test_aggregate_counts_random_fallbacks_and_breakdowns(root):
    s4, s5 = lvb.load(root)
    scored = [scored_sample(s4, lvb.score("B", s4, "official")), scored_sample(s5, lvb.score("", s5, "official"))]
    result = lvb.aggregate(scored, "official")
    assert result["n_flagged"]["random_fallback"] == 1 and result["n_unparsed"] == 0 and result["n_scored"] == 2
    assert set(result["breakdowns"]) == {"duration_group", "question_category", "level", "topic_category"}
    assert "Random fallbacks: 1" in result["notes"][0]
    assert lvb.score("E", s5, "official").correct is True


# --------------------------------------------------------------------------- Prompt.interleave in the adapters


def test_prompt_interleave_contract():
    with pytest.raises(ValueError, match="frame order"):
        Prompt(user="q", interleave=((3, "a"), (1, "b")))
    with pytest.raises(ValueError, match="entries must be"):
        Prompt(user="q", interleave=((1, 2),))
    with pytest.raises(ValueError, match="never drop the texts"):
        qwen_chat(Prompt(user="q", interleave=((0, "a"),)), "")
    assert prepend_interleave(Prompt(user="q", interleave=((0, "a"), (4, "b")))) == Prompt(user="a\nb\nq")


def test_frame_groups_round_boundaries_up_to_even():
    assert frame_groups((), 8) == ([], [(0, 8, [])])
    lead, groups = frame_groups(((0, "L"), (3, "a"), (4, "b"), (5, "c"), (8, "end")), 8)
    assert lead == ["L"] and groups == [(0, 4, ["a", "b"]), (4, 6, ["c"]), (6, 8, ["end"])]
    assert frame_groups(((7, "z"),), 7) == ([], [(0, 7, ["z"])])  # odd T: the last group is padded as usual
    assert frame_groups(((1, "x"),), 7) == ([], [(0, 2, ["x"]), (2, 7, [])])
    with pytest.raises(ValueError, match="outside the request's 4 frames"):
        frame_groups(((5, "x"),), 4)


@pytest.fixture(scope="module")
def qwen():
    from vamba_eval.models.qwen2vl_adapter import Qwen2VLAdapter

    return Qwen2VLAdapter(ModelSpec(name="qwen2vl"))


def test_qwen2vl_interleaves_frame_groups(qwen):
    import torch

    frames = np.random.default_rng(0).integers(0, 255, (8, 56, 84, 3), dtype=np.uint8)
    prompt = Prompt(user="Q?", interleave=((0, "lead"), (3, "sub a"), (3, "sub b"), (8, "last")))
    inputs = qwen._inputs(Request("s", frames, tuple(range(8)), prompt, 2))
    assert inputs["video_grid_thw"].tolist() == [[2, 4, 6], [2, 4, 6]]
    text = qwen.tokenizer.decode(inputs["input_ids"][0].tolist()).replace("<|video_pad|>", "")
    assert ("user\nlead\n<|vision_start|><|vision_end|>sub a\nsub b\n<|vision_start|><|vision_end|>last\nQ?<|im_end|>"
            in text)
    plain = qwen._inputs(Request("s", frames, tuple(range(8)), Prompt(user="Q?"), 2))
    assert int(plain["mm_token_type_ids"].sum()) == int(inputs["mm_token_type_ids"].sum()) == 2 * 24
    with torch.no_grad():  # the ViT attends within a 2-frame patch: split groups give the same video tokens
        feats = [torch.cat(qwen.model.model.get_video_features(x["pixel_values_videos"], x["video_grid_thw"]).pooler_output)
                 for x in (inputs, plain)]
    assert torch.equal(feats[0], feats[1])
    pred = qwen.generate([Request("s", frames, tuple(range(8)), prompt, 2)])[0]
    assert pred.video_tokens == 24 and pred.output_tokens <= 2
    assert int(qwen.model.model.rope_deltas) != 0  # M-RoPE ran (mm_token_type_ids given)
    assert qwen.describe()["interleave_support"] == "interleaved"


def test_vamba_prepends_interleaved_texts():
    from vamba_eval.models.vamba_adapter import VambaAdapter

    model = VambaAdapter(ModelSpec(name="vamba"))
    frames = np.random.default_rng(1).integers(0, 255, (4, 56, 56, 3), dtype=np.uint8)
    req = Request("s", frames, (0.0, 1.0, 2.0, 3.0), Prompt(user="Q?", interleave=((1, "sub one"), (3, "two"))), 2)
    plain = model.generate([Request("s", frames, req.frame_times, Prompt(user="Q?"), 2)])[0]
    pred = model.generate([req])[0]
    added = len(model.tokenizer("sub one\ntwo\n", add_special_tokens=False)["input_ids"])
    assert pred.prompt_tokens == plain.prompt_tokens + added  # the texts, once each, ahead of the question
    assert model.describe()["interleave_support"] == "prepended"


# --------------------------------------------------------------------------- demo release and a real run


def test_demo_release_layout(tmp_path):
    folder = lvb.write_demo(tmp_path / "demo", 0)
    val = json.loads((folder / "lvb_val.json").read_text())
    test = json.loads((folder / "lvb_test_wo_gt.json").read_text())
    assert {len(r["candidates"]) for r in val} == {4, 5} and any(r["correct_choice"] == 4 for r in val)
    assert all("correct_choice" not in r for r in test)
    forms = {("timestamp" in json.loads((folder / "subtitles" / r["subtitle_path"]).read_text())[0]) for r in val}
    assert forms == {True, False}
    assert any(r["starting_timestamp_for_subtitles"] for r in val)
    assert all((folder / "videos" / r["video_path"]).is_file() for r in val + test)
    from_json = lvb.load(folder)
    (folder / "lvb_val.json").unlink()
    assert [(s.sample_id, s.options, s.answer, dict(s.categories)) for s in lvb.load(folder)] == \
           [(s.sample_id, s.options, s.answer, dict(s.categories)) for s in from_json]


def test_cli_run_with_subtitles_end_to_end(tmp_path, monkeypatch):
    from vamba_eval.cli import main
    from vamba_eval.run.api import rescore

    monkeypatch.setenv("VAMBA_EVAL_CACHE", "/tmp/lvb_cache")
    out = tmp_path / "run"
    main(["run", "--tasks", "longvideobench", "--limit", "6", "--frames", "8", "--subtitles", "--output", str(out)])
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(r["error"] is None and len(r["frame_times"]) == 8 for r in records)
    results = json.loads((out / "results.json").read_text())["tasks"]["longvideobench"]
    assert results["n"] == 6 and results["n_failed"] == 0
    assert results["n_flagged"].get("random_fallback", 0) == sum("random_fallback" in r["flags"] for r in records)
    assert set(results["breakdowns"]) == {"duration_group", "question_category", "level", "topic_category"}
    conf = json.loads((out / "config.json").read_text())
    assert conf["config"]["subtitles"] is True and conf["model"]["interleave_support"] == "prepended"
    assert rescore(out).tasks["longvideobench"].model_dump(mode="json") == results  # seeded fallbacks reproduce
    assert "not LongVideoBench" in (out / "report.html").read_text()
