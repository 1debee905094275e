"""Hostile annotations (issue 10, item 2), for every multiple-choice adapter: LVBench (JSONL),
Video-MME (parquet), MLVU, LongVideoBench and MVBench (whole-file JSON).

Policy under test (vamba_eval/task_api.py, "bad records"):

* a bad RECORD — missing field, wrong type, option count mismatch, answer outside the options —
  raises a DataError naming the file, the line/row/record and the fix; inside
  ``recording_bad_records()`` (what a run does) it becomes a failed Sample carrying that message
  instead (nothing invented: no question, options or answer) and the other records load;
* a STRUCTURAL problem — duplicate ids, bytes that are not UTF-8, a line or file over the size
  limit — fails the whole load in both modes (the file needs fixing; there is no record to keep);
* MLVU and MVBench give an answer that is not among the candidates the official gold "@" (their
  official ``qa_template``), flagged and counted wrong — the real MLVU dev set has two such items.
"""

from __future__ import annotations

import json
import re
import tracemalloc
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from vamba_eval.task_api import DataError, load_error, recording_bad_records
from vamba_eval.tasks import longvideobench, lvbench, mlvu, mvbench, videomme
from vamba_eval.tasks._mlvu_common import MC_TASKS
from vamba_eval.taskutil import ANNOTATION_LIMIT_ENV

MB = 1024 * 1024
OPTIONS_TEXT = "What is shown?\n(A) a cat\n(B) a dog\n(C) a bird\n(D) a fish"


# --------------------------------------------------------------------------- the five release formats


def _json(path: Path, records: list, indent: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=indent), encoding="utf-8")
    return path


def _lvbench_write(root: Path, records: list) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "video_info.meta.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _videomme_write(root: Path, records: list) -> Path:
    import pandas as pd

    path = root / "videomme" / "test-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(records).to_parquet(path)
    return path


def _mlvu_write(root: Path, records: list) -> Path:
    for stem in MC_TASKS:
        if stem != "1_plotQA":
            _json(root / "json" / f"{stem}.json", [_mlvu_good(0, video=f"{stem}.mp4")])
    return _json(root / "json" / "1_plotQA.json", records)


def _mlvu_good(i: int, **kw: Any) -> dict:
    return {"video": f"v{i}.mp4", "duration": 100.0, "question": "What is shown?",
            "candidates": ["a cat", "a dog", "a bird", "a fish"], "answer": "a dog", "question_type": "plotQA", **kw}


def _lvb_good(i: int) -> dict:
    return {"id": f"lvb{i}", "video_id": f"vid{i}", "video_path": f"vid{i}.mp4", "question": "What is shown?",
            "candidates": ["a cat", "a dog", "a bird", "a fish"], "correct_choice": 1, "question_category": "S2O",
            "duration_group": 15, "duration": 12.0, "subtitle_path": f"vid{i}_en.json"}


@dataclass(frozen=True)
class Fmt:
    name: str
    load: Callable[[Path], list]
    good: Callable[[int], dict]
    write: Callable[[Path, list], Path]  # (root, records) → the annotation file
    where: Callable[[int], str]  # regex: how messages name record i
    sid: Callable[[int], str]  # sample_id of record i
    question: Callable[[dict], dict] = lambda rec: rec  # the dict holding the question fields


FORMATS = {
    "lvbench": Fmt(
        "lvbench", lvbench.load,
        lambda i: {"key": f"v{i}", "type": "cartoon", "video_info": {"duration_minutes": 1.0},
                   "qa": [{"uid": i, "question": OPTIONS_TEXT, "answer": "B", "question_type": ["reasoning"],
                           "time_reference": "00:01-00:05"}]},
        _lvbench_write, lambda i: rf"line {i + 1} \(video v{i}\) (qa\[0\]|uid {i})", str,
        question=lambda rec: rec["qa"][0]),
    "videomme": Fmt(
        "videomme", videomme.load,
        lambda i: {"video_id": f"{i:03d}", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity",
                   "url": "https://example.org", "videoID": f"vid{i}", "question_id": f"{i:03d}-1",
                   "task_type": "Counting Problem", "question": "What is shown?",
                   "options": ["A. a cat", "B. a dog", "C. a bird", "D. a fish"], "answer": "B"},
        _videomme_write, lambda i: rf"row {i}( \(question_id {i:03d}-1\))?", lambda i: f"{i:03d}-1"),
    "mlvu": Fmt("mlvu", mlvu.load, _mlvu_good, _mlvu_write, lambda i: rf"record {i}( \(video v{i}\.mp4\))?",
                lambda i: f"1_plotQA_{i}"),
    "longvideobench": Fmt("longvideobench", longvideobench.load, _lvb_good,
                          lambda root, recs: _json(root / "lvb_val.json", recs), lambda i: rf"record {i}( \(id lvb{i}\))?",
                          lambda i: f"lvb{i}"),
    "mvbench": Fmt("mvbench", mvbench.load,
                   lambda i: {"video": f"v{i}.mp4", "question": "What is shown?", "candidates": ["red", "blue"],
                              "answer": "blue"},
                   lambda root, recs: _json(root / "json" / "object_existence.json", recs),
                   lambda i: rf"record {i}( \(video v{i}\.mp4\))?", lambda i: f"object_existence_{i:03d}"),
}


def _set(**kw: Any) -> Callable[[dict], None]:
    return lambda q: q.update(kw)


def _drop(key: str) -> Callable[[dict], None]:
    return lambda q: q.pop(key)


# (format, case) → (mutation of record 1's question dict, text the message must contain)
BAD_RECORDS: dict[tuple[str, str], tuple[Callable[[dict], None], str]] = {
    ("lvbench", "missing_field"): (_drop("question"), "missing field(s) 'question'"),
    ("lvbench", "wrong_type"): (_set(question=42), "field 'question' must be a non-empty string, found 42"),
    ("lvbench", "wrong_type_answer"): (_set(answer=["B"]), "answer ['B'] is not one of A, B, C, D"),
    ("lvbench", "options_count"): (_set(question=OPTIONS_TEXT.rsplit("\n", 1)[0]), "expected 4 option lines"),
    ("lvbench", "answer_outside"): (_set(answer="E"), "answer 'E' is not one of A, B, C, D"),
    ("videomme", "missing_field"): (_set(question=None), "missing field(s) 'question'"),
    ("videomme", "missing_two"): (_set(domain=None, answer=None), "missing field(s) 'domain', 'answer'"),
    ("videomme", "options_count"): (_set(options=["A. a", "B. b", "C. c"]), "'options' must be a list of 4 strings, found 3"),
    ("videomme", "answer_outside"): (_set(answer="E"), "answer 'E' is not one of A, B, C, D"),
    ("mlvu", "missing_field"): (_drop("question"), "missing field(s) 'question'"),
    ("mlvu", "wrong_type"): (_set(candidates="a cat, a dog"), "'candidates' must be a list of 2–6 options"),
    ("mlvu", "wrong_type_answer"): (_set(answer={"text": "a dog"}), "'answer' must be the text (or number) of a candidate"),
    ("mlvu", "options_count"): (_set(candidates=list("abcdefg")), "'candidates' must be a list of 2–6 options"),
    ("longvideobench", "missing_field"): (_drop("question"), "missing field(s) 'question'"),
    ("longvideobench", "wrong_type"): (_set(correct_choice="1"), "correct_choice '1' is not a 0-based index"),
    ("longvideobench", "wrong_type_path"): (_set(video_path=["a.mp4"]), "field 'video_path' must be a non-empty string"),
    ("longvideobench", "options_count"): (_set(candidates=list("abcdef")), "6 candidates; LongVideoBench items have 4 or 5"),
    ("longvideobench", "answer_outside"): (_set(correct_choice=4), "correct_choice 4 is not a 0-based index into its 4"),
    ("mvbench", "missing_field"): (_drop("question"), "missing field(s) 'question'"),
    ("mvbench", "wrong_type"): (_set(candidates={"red": 1}), "'candidates' must be a list of 1–26 options"),
    ("mvbench", "wrong_type_answer"): (_set(answer=["blue"]), "candidates and answer must be texts"),
    ("mvbench", "options_count"): (_set(candidates=[f"c{k}" for k in range(27)]), "'candidates' must be a list of 1–26"),
}


def _load_both_ways(fmt: Fmt, root: Path, n: int, pattern: str) -> list:
    """Strict: DataError matching ``pattern``. Recording: ``n`` samples, the bad ones failed."""
    with pytest.raises(DataError) as exc:
        fmt.load(root)
    assert re.search(pattern, str(exc.value)), (pattern, str(exc.value))
    with recording_bad_records():
        samples = fmt.load(root)
    others = len(MC_TASKS) - 1 if fmt.name == "mlvu" else 0  # one good record in each other MLVU task file
    assert len(samples) == n + others
    return samples[:n]  # 1_plotQA comes first


@pytest.mark.parametrize("fmt_name, case", sorted(BAD_RECORDS))
def test_bad_record_is_a_clear_error_or_a_recorded_failed_sample(tmp_path, fmt_name, case):
    fmt = FORMATS[fmt_name]
    mutate, text = BAD_RECORDS[(fmt_name, case)]
    records = [fmt.good(i) for i in range(3)]
    mutate(fmt.question(records[1]))
    path = fmt.write(tmp_path, records)
    pattern = f"^{re.escape(str(path))}: {fmt.where(1)}: .*{re.escape(text)}"
    samples = _load_both_ways(fmt, tmp_path, 3, pattern)
    assert [s.sample_id for s in samples] == [fmt.sid(i) for i in range(3)]
    good, bad = [samples[0], samples[2]], samples[1]
    message = load_error(bad)
    assert message is not None and re.search(pattern, message)
    assert re.search(r"(Fix|fix|Re-download|re-download|Use) ", message.split(text, 1)[1]), message  # says what to do
    assert (bad.question, bad.options, bad.answer, dict(bad.categories)) == ("", (), "", {})  # nothing invented
    assert all(load_error(s) is None and s.question and s.options for s in good)


@pytest.mark.parametrize("fmt_name, drop, fallback", [
    ("lvbench", "uid", "line2.qa0"), ("videomme", "question_id", "row1"), ("longvideobench", "id", "record1"),
])
def test_record_without_its_id_gets_a_positional_id(tmp_path, fmt_name, drop, fallback):
    fmt = FORMATS[fmt_name]
    records = [fmt.good(i) for i in range(3)]
    fmt.question(records[1])[drop] = None
    fmt.write(tmp_path, records)
    samples = _load_both_ways(fmt, tmp_path, 3, f"missing field\\(s\\) '{drop}'")
    assert samples[1].sample_id == fallback and load_error(samples[1])


def test_lvbench_video_line_without_questions(tmp_path):
    fmt = FORMATS["lvbench"]
    records = [fmt.good(0), {"key": "v1", "qa": "not a list"}, {"key": "v2"}]
    path = fmt.write(tmp_path, records)
    samples = _load_both_ways(fmt, tmp_path, 3, rf"{re.escape(str(path))}: line 2 \(video v1\): 'qa' must be a list")
    assert [s.sample_id for s in samples] == ["0", "line2", "line3"]
    assert "line 3 (video v2): missing field 'qa'" in load_error(samples[2])


def test_videomme_column_of_the_wrong_type_fails_every_row(tmp_path):
    """A release revision storing the options as one string: each row is a recorded failure."""
    fmt = FORMATS["videomme"]
    records = [{**fmt.good(i), "options": "A. a\nB. b\nC. c\nD. d"} for i in range(3)]
    fmt.write(tmp_path, records)
    samples = _load_both_ways(fmt, tmp_path, 3, r"row 0 \(question_id 000-1\): 'options' must be a list of 4 strings, found a str")
    assert all("found a str" in load_error(s) for s in samples)


def test_videomme_binary_column_that_is_not_utf8(tmp_path):
    fmt = FORMATS["videomme"]
    records = [{**fmt.good(i), "question": f"What is shown {i}?".encode()} for i in range(3)]
    records[1]["question"] = b"What \xff\xfe is shown?"
    path = fmt.write(tmp_path, records)
    samples = _load_both_ways(fmt, tmp_path, 3, f"{re.escape(str(path))}: row 1 .*field 'question' is not valid UTF-8")
    assert samples[0].question == "What is shown 0?" and load_error(samples[1])


# --------------------------------------------------------------------------- answers outside the candidates


@pytest.mark.parametrize("fmt_name", ["mlvu", "mvbench"])
def test_answer_text_not_among_candidates_follows_the_official_rule(tmp_path, fmt_name):
    """Official qa_template: gold "@" (index −1), counted wrong, flagged — not a load error."""
    fmt = FORMATS[fmt_name]
    records = [fmt.good(i) for i in range(2)]
    records[1]["answer"] = "a zebra"
    fmt.write(tmp_path, records)
    samples = fmt.load(tmp_path)
    assert samples[1].answer == "@" and load_error(samples[1]) is None
    task = {"mlvu": mlvu, "mvbench": mvbench}[fmt_name].TASK
    verdict = task.score("(A) red", samples[1], "official")
    assert verdict.correct is False
    if fmt_name == "mlvu":
        assert "answer_not_in_candidates" in samples[1].meta["quirks"]
    else:
        assert "gold_not_in_candidates" in verdict.flags


# --------------------------------------------------------------------------- structural problems


@pytest.mark.parametrize("fmt_name, what, third", [
    ("lvbench", "uid", "line 3"), ("videomme", "question_id", "row 2"), ("longvideobench", "id", "record 2"),
])
def test_duplicate_ids_fail_the_load_naming_both_records(tmp_path, fmt_name, what, third):
    fmt = FORMATS[fmt_name]
    records = [fmt.good(i) for i in range(3)]
    records[2] = {**fmt.good(0), **({"key": "v2"} if fmt_name == "lvbench" else {})}
    path = re.escape(str(fmt.write(tmp_path, records)))
    pattern = (rf"^{path}: {third}\b.*: duplicate {what} {re.escape(fmt.sid(0))} \(first at {path}: {fmt.where(0)}\)\. "
               "Fix the release")
    for recording in (False, True):
        with pytest.raises(DataError, match=pattern):
            with recording_bad_records() if recording else nullcontext():
                fmt.load(tmp_path)


def test_mlvu_test_split_duplicate_question_ids(tmp_path):
    rec = lambda q: {**_mlvu_good(0, candidates=list("abcdef"), answer="b"), "question_id": q}  # noqa: E731
    path = _json(tmp_path / "test-ground-truth" / "test_mcq_gt.json", [rec("q1"), rec("q2"), rec("q1")])
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: record 2 .*duplicate sample id q1 \(first at .*record 0"):
        mlvu.load(tmp_path)


def test_mvbench_ids_are_positions_so_repeated_records_stay_distinct(tmp_path):
    fmt = FORMATS["mvbench"]
    fmt.write(tmp_path, [fmt.good(0)] * 3)
    assert [s.sample_id for s in fmt.load(tmp_path)] == [fmt.sid(i) for i in range(3)]


def _non_utf8(fmt: Fmt, tmp_path: Path) -> tuple[Path, int, int]:
    """Record 1's question gets a 0xff byte; returns the file and the (line, column) of that byte."""
    records = [fmt.good(i) for i in range(3)]
    fmt.question(records[1])["question"] = "What @@BAD@@ is shown?\n(A) a\n(B) b\n(C) c\n(D) d"
    path = fmt.write(tmp_path, records)
    raw = path.read_bytes().replace(b"@@BAD@@", b"\xff")  # a Latin-1 byte in a UTF-8 file
    path.write_bytes(raw)
    at = raw.index(b"\xff")
    return path, raw.count(b"\n", 0, at) + 1, at - (raw.rfind(b"\n", 0, at) + 1) + 1


@pytest.mark.parametrize("fmt_name", ["lvbench", "mlvu", "longvideobench", "mvbench"])
def test_non_utf8_bytes_fail_the_load_naming_line_and_column(tmp_path, fmt_name):
    fmt = FORMATS[fmt_name]
    path, line, col = _non_utf8(fmt, tmp_path)
    assert line == 2 if fmt_name == "lvbench" else line > 2  # JSONL: record 1 is line 2
    pattern = rf"^{re.escape(str(path))}: line {line}: not valid UTF-8 \(byte 0xff at column {col}\)\. .*convert it to UTF-8"
    for recording in (False, True):
        with pytest.raises(DataError, match=pattern):
            with recording_bad_records() if recording else nullcontext():
                fmt.load(tmp_path)


# --------------------------------------------------------------------------- a 100 MB line


def _peak_while(fn: Callable[[], Any]) -> tuple[BaseException, int]:
    """Run ``fn`` (it must raise DataError) under tracemalloc; (error, peak bytes allocated)."""
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as exc:
            fn()
        return exc.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _huge(fmt: Fmt, tmp_path: Path, size: int) -> Path:
    records = [fmt.good(i) for i in range(3)]
    fmt.question(records[1])["question"] = "x" * size
    return fmt.write(tmp_path, records)


def test_lvbench_100mb_line_is_refused_with_bounded_memory(tmp_path, monkeypatch):
    fmt = FORMATS["lvbench"]
    path = _huge(fmt, tmp_path, 100 * MB)
    err, peak = _peak_while(lambda: fmt.load(tmp_path))
    assert re.match(rf"{re.escape(str(path))}: line 2 is 100\.0 MB, over the 64 MB limit .*\$VAMBA_EVAL_MAX_ANNOTATION_MB", str(err))
    assert peak < 80 * MB  # about the limit (one growing buffer) is held, never the whole line
    monkeypatch.setenv(ANNOTATION_LIMIT_ENV, "1")
    err, peak = _peak_while(lambda: fmt.load(tmp_path))
    assert "line 2 is 100.0 MB, over the 1 MB limit for annotation data (refused)" in str(err) and peak < 4 * MB


@pytest.mark.parametrize("fmt_name", ["mlvu", "longvideobench", "mvbench", "videomme"])
def test_100mb_annotation_file_is_refused_unread(tmp_path, fmt_name):
    fmt = FORMATS[fmt_name]
    path = _huge(fmt, tmp_path, 100 * MB)
    err, peak = _peak_while(lambda: fmt.load(tmp_path))
    what = "its uncompressed data" if fmt_name == "videomme" else "the file"  # parquet: checked from its footer
    assert re.match(rf"{re.escape(str(path))}: {what} is 1\d\d\.\d MB, over the 64 MB limit for annotation data "
                    r"\(refused unread\)", str(err)), str(err)
    assert peak < 2 * MB


def test_limit_can_be_raised_for_a_genuinely_big_file(tmp_path, monkeypatch):
    fmt = FORMATS["mvbench"]
    _huge(fmt, tmp_path, 2 * MB)
    monkeypatch.setenv(ANNOTATION_LIMIT_ENV, "1")
    with pytest.raises(DataError, match="over the 1 MB limit"):
        fmt.load(tmp_path)
    monkeypatch.setenv(ANNOTATION_LIMIT_ENV, "8")
    assert len(fmt.load(tmp_path)) == 3
    monkeypatch.setenv(ANNOTATION_LIMIT_ENV, "lots")
    with pytest.raises(DataError, match=r"\$VAMBA_EVAL_MAX_ANNOTATION_MB='lots' is not a number"):
        fmt.load(tmp_path)


# --------------------------------------------------------------------------- every field, every wrong type

FUZZ_VALUES = [None, 0, 42, -1, 3.5, float("nan"), float("inf"), True, "", " ", "E", [], {}, [1, 2], ["a"],
               {"a": 1}, [None], [[1]]]


@pytest.mark.parametrize("fmt_name", sorted(FORMATS))
def test_any_wrong_type_in_any_field_is_a_data_error_never_a_crash(tmp_path, fmt_name):
    """Each field of record 1 set to each of ``FUZZ_VALUES``: loading raises DataError or succeeds
    (strict), and while recording bad records only a duplicate id (uid 0 again) fails the load."""
    fmt = FORMATS[fmt_name]
    fields = [(fmt.question, k) for k in fmt.question(fmt.good(0))]
    if fmt_name == "lvbench":  # the video-level fields of its line too
        fields += [(lambda rec: rec, k) for k in fmt.good(0) if k != "qa"]
    n = 0
    for part, key in fields:
        for value in FUZZ_VALUES:
            records = [fmt.good(i) for i in range(2)]
            part(records[1])[key] = value
            root = tmp_path / f"case{n}"
            n += 1
            try:
                fmt.write(root, records)
            except Exception:  # noqa: BLE001 - parquet cannot hold this mix of types: nothing to load
                continue
            try:
                fmt.load(root)
            except DataError:
                pass
            try:
                with recording_bad_records():
                    samples = fmt.load(root)
            except DataError as err:  # the one structural problem a field value can cause
                assert "duplicate" in str(err), (key, value, str(err))
                continue
            assert len(samples) == (2 + 6 if fmt_name == "mlvu" else 2) and all(s.sample_id for s in samples)
