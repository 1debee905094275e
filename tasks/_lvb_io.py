"""LongVideoBench release files: annotation records (JSON list or parquet copy) → Samples, and
subtitle files → shifted cues. The rules are documented in the task card (``longvideobench.py``);
this module is private to that task (the leading underscore keeps it out of the task registry).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from vamba_eval.task_api import DataError, guard_record
from vamba_eval.taskutil import (as_str_list, id_field, present, read_json_file, read_parquet, record_id, require_fields,
                                 text_field)
from vamba_eval.types import Sample, VideoRef

REQUIRED = ("id", "video_id", "video_path", "question", "question_category", "duration_group", "duration")
OPTIONAL_META = ("position", "question_wo_referring_query", "view_count")
ABSENT_OPTION = "N/A"
N_PARQUET_OPTIONS = 5


# --------------------------------------------------------------------------- annotation records


def read_split(root: Path, split: str, json_name: str, letters: str, task: str) -> Iterator[tuple[Sample, str]]:
    """(sample, "file: record") for every record of the split."""
    path = root / json_name
    if path.is_file():
        records = _read_json_list(path)
    else:
        path = _find_parquet(root, split, json_name)
        records = [{k: _plain(v) for k, v in row.items()} for row in
                   read_parquet(path, REQUIRED).to_dict(orient="records")]
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: record {i}: expected a JSON object, got {type(rec).__name__}. Re-download the file.")
        rid = record_id(rec.get("id"))
        where = f"record {i}" + (f" (id {rid})" if rid else "")
        sample = guard_record(lambda: _sample(root, rec, path, where, split, letters, task), task=task,
                              sample_id=rid or f"record{i}", source=path)
        yield sample, f"{path}: {where}"


def _read_json_list(path: Path) -> list[Any]:
    data = read_json_file(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of question records, got {type(data).__name__}. "
                        "Use lvb_val.json / lvb_test_wo_gt.json from the release.")
    return data


def _find_parquet(root: Path, split: str, json_name: str) -> Path:
    for folder in (root, root / "data"):
        found = sorted(folder.glob(f"{split}-*.parquet"))
        if found:
            if len(found) > 1:
                raise DataError(f"{folder}: several {split}-*.parquet files ({', '.join(p.name for p in found)}); "
                                "keep one copy of the split.")
            return found[0]
    raise DataError(f"{root}: neither {json_name} nor {split}-*.parquet found. Expected layout: "
                    "<root>/lvb_val.json and/or <root>/lvb_test_wo_gt.json (or their parquet copies), "
                    "<root>/videos/, <root>/subtitles/ (hub longvideobench/LongVideoBench).")


def _plain(value: Any) -> Any:
    """numpy scalars/arrays from parquet → Python values (NaN stays a float, see ``present``)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _candidates(rec: dict[str, Any], path: Path, where: str, letters: str) -> list[str]:
    if present(rec.get("candidates")):
        options = as_str_list(rec["candidates"])
        if options is None:
            raise DataError(f"{path}: {where}: 'candidates' must be a list of strings. Re-download the release.")
    elif any(f"option{i}" in rec for i in range(N_PARQUET_OPTIONS)):
        cells = [rec.get(f"option{i}") for i in range(N_PARQUET_OPTIONS)]
        given = [present(c) and str(c) != ABSENT_OPTION for c in cells]
        options = [str(c) for c, ok in zip(cells, given) if ok]
        if given != sorted(given, reverse=True):
            raise DataError(f"{path}: {where}: an option follows an absent one ('N/A') in option0..option4. "
                            "Re-download the release.")
    else:
        raise DataError(f"{path}: {where}: missing field 'candidates' (or option0..option4). Re-download the release.")
    if not 2 <= len(options) <= len(letters):
        raise DataError(f"{path}: {where}: {len(options)} candidates; LongVideoBench items have 4 or 5 "
                        f"(at most {len(letters)}, letters {letters}). Fix the record.")
    return options


def _label(rec: dict[str, Any], n: int, path: Path, where: str, split: str, letters: str) -> str:
    value = rec.get("correct_choice")
    if not present(value) or (split == "test" and value == -1):
        if split == "test":
            return ""
        raise DataError(f"{path}: {where}: missing 'correct_choice' in the validation split. "
                        "Use lvb_val.json (labelled) for validation, lvb_test_wo_gt.json for test.")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # parquet stores an int column with nulls as float
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        raise DataError(f"{path}: {where}: correct_choice {value!r} is not a 0-based index into its "
                        f"{n} candidates. Fix the record or re-download the release.")
    return letters[value]


def _sample(root: Path, rec: dict[str, Any], path: Path, where: str, split: str, letters: str, task: str) -> Sample:
    require_fields(rec, REQUIRED, path, where)
    options = _candidates(rec, path, where, letters)
    answer = _label(rec, len(options), path, where, split, letters)
    try:
        if any(isinstance(rec.get(k), bool) for k in ("duration", "starting_timestamp_for_subtitles")):
            raise TypeError
        duration = float(rec["duration"])
        shift = float(rec.get("starting_timestamp_for_subtitles") or 0.0)
    except (TypeError, ValueError):
        raise DataError(f"{path}: {where}: 'duration' and 'starting_timestamp_for_subtitles' must be numbers "
                        f"(got {rec.get('duration')!r}, {rec.get('starting_timestamp_for_subtitles')!r}). Fix the record.") from None
    group = rec["duration_group"]
    integral = isinstance(group, (int, float)) and not isinstance(group, bool) and float(group).is_integer()
    categories = {"duration_group": (str(int(group)) if integral else str(group),),
                  "question_category": (str(rec["question_category"]),)}
    for axis in ("level", "topic_category"):
        if present(rec.get(axis)):
            categories[axis] = (str(rec[axis]),)
    meta: dict[str, Any] = {"video_id": str(rec["video_id"]), "duration": duration, "duration_s": duration,
                            "starting_timestamp_for_subtitles": shift, "split": split}
    meta.update({k: rec[k] for k in OPTIONAL_META if present(rec.get(k))})
    has_sub = present(rec.get("subtitle_path")) and rec["subtitle_path"] != ""
    sub = text_field(rec, "subtitle_path", path, where) if has_sub else None
    return Sample(
        task=task,
        sample_id=id_field(rec, "id", path, where),
        video=VideoRef(path=str(root / "videos" / text_field(rec, "video_path", path, where))),
        question=text_field(rec, "question", path, where),
        options=tuple(f"{letters[i]}. {c}" for i, c in enumerate(options)),
        answer=answer,
        categories=categories,
        subtitles=str(root / "subtitles" / sub) if sub else None,
        meta=meta,
    )


# --------------------------------------------------------------------------- subtitles


def _hms(stamp: Any, path: str, i: int) -> float:
    """``timestamp_to_seconds``: "H:M:S(.fff)" → int(h)·3600 + int(m)·60 + float(s)."""
    try:
        h, m, s = str(stamp).split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    except ValueError:
        raise DataError(f"{path}: cue {i}: bad time {stamp!r} (want HH:MM:SS.fff). Re-extract subtitles.tar.") from None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cue(entry: Any, i: int, path: str, duration: float, shift: float) -> tuple[float, float, str]:
    if not isinstance(entry, dict):
        raise DataError(f"{path}: cue {i}: expected an object, got {type(entry).__name__}. Re-extract subtitles.tar.")
    if "timestamp" in entry:
        stamp = entry["timestamp"]
        if not isinstance(stamp, (list, tuple)) or len(stamp) != 2 or not _number(stamp[0]):
            raise DataError(f"{path}: cue {i}: 'timestamp' must be [start, end] with a numeric start, "
                            f"got {stamp!r}. Re-extract subtitles.tar.")
        start, end = stamp
        if not isinstance(end, float):  # official: `if not isinstance(end, float): end = duration`
            end = duration
        text, key = entry.get("text"), "text"
    else:
        start, end = _hms(entry.get("start"), path, i), _hms(entry.get("end"), path, i)
        text, key = entry.get("line"), "line"
    if not isinstance(text, str):
        raise DataError(f"{path}: cue {i}: missing text field {key!r}. Re-extract subtitles.tar.")
    return float(start) - shift, float(end) - shift, text


def load_cues(path: str, duration: float, shift: float) -> tuple[tuple[float, float, str], ...]:
    """(start, end, text) per cue, in file order, on the video's clock (shifted by ``shift``).
    Cached per (file, size, mtime): a video's questions share one file, an edited file is re-read."""
    try:
        stat = Path(path).stat()
    except OSError as exc:
        raise DataError(f"{path}: cannot read subtitle file ({exc.strerror}). Extract subtitles.tar into "
                        "<root>/subtitles/, or run without --subtitles.") from exc
    return _cues(path, stat.st_size, stat.st_mtime_ns, duration, shift)


@lru_cache(maxsize=128)
def _cues(path: str, size: int, mtime_ns: int, duration: float, shift: float) -> tuple[tuple[float, float, str], ...]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"{path}: cannot read subtitle file ({exc.strerror}). Extract subtitles.tar into "
                        "<root>/subtitles/, or run without --subtitles.") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: invalid subtitle JSON ({exc}). Re-extract subtitles.tar.") from exc
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of cues, got {type(data).__name__}. Re-extract subtitles.tar.")
    return tuple(_cue(entry, i, path, duration, shift) for i, entry in enumerate(data))
