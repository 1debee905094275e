"""Helpers shared by the benchmark modules in ``tasks/``: reading release files with clear
errors, option parsing, SRT subtitles, hub snapshots, and Score → ScoredSample.

Every ``DataError`` message follows ``"<file>: <record>: <what is wrong>. <what to do>"`` so a run
can record it verbatim (DESIGN.md, Policies: bad input names the file/record and the fix).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from vamba_eval.task_api import SCORING_MODES, DataError, Score
from vamba_eval.task_files import (  # noqa: F401 - re-exported: the readers every task uses
    ANNOTATION_LIMIT_ENV,
    max_annotation_bytes,
    read_json_file,
    read_jsonl,
    read_parquet,
)
from vamba_eval.types import Sample, ScoredSample

# --------------------------------------------------------------------------- release files


def require_folder(folder: Path, task: str, layout: str) -> Path:
    """The release root must be an existing directory; the error spells out the layout."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: {task} release folder not found. Expected layout: {layout}")
    return folder


def require_fields(record: Mapping[str, Any], fields: Iterable[str], file: Path | str, where: str) -> None:
    """Raise DataError naming the file, the record and every missing field."""
    missing = [f for f in fields if not present(record.get(f))]
    if missing:
        names = ", ".join(repr(f) for f in missing)
        raise DataError(
            f"{file}: {where}: missing field(s) {names}. "
            "Re-download the release file (it may be truncated or from another benchmark)."
        )


def as_str_list(value: Any) -> Optional[list[str]]:
    """A list/tuple/array of texts or numbers as a list of strings; None for anything else (a
    string, a mapping, nested lists …: the caller raises its DataError)."""
    if isinstance(value, (str, bytes, Mapping, set)) or value is None:
        return None
    try:
        items = list(value)
    except TypeError:
        return None
    if any(isinstance(v, (bytes, bool, Mapping, list, tuple, set)) or v is None for v in items):
        return None
    return [str(v) for v in items]


def record_id(value: Any) -> Optional[str]:
    """A release id as text (``3`` and ``3.0`` — an int column with gaps, read by pandas — give
    "3"); None when it is missing or not a string/number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else (None if value != value else str(value))
    if isinstance(value, (str, int)) or type(value).__module__ == "numpy":
        text = str(value.item() if hasattr(value, "item") else value)
        return text if text.strip() else None
    return None


def id_field(rec: Mapping[str, Any], key: str, file: Path | str, where: str) -> str:
    """A required id field (string or integer), else DataError."""
    text = record_id(rec.get(key))
    if text is None:
        raise DataError(f"{file}: {where}: field {key!r} must be a non-empty string or integer id, "
                        f"found {_short(rec.get(key))}. Fix the record or re-download the release.")
    return text


def text_field(rec: Mapping[str, Any], key: str, file: Path | str, where: str) -> str:
    """A required non-empty string field (bytes must be UTF-8), else DataError."""
    value = rec.get(key)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{file}: {where}: field {key!r} is not valid UTF-8 text. Re-download the release.") from None
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{file}: {where}: field {key!r} must be a non-empty string, found {_short(value)}. "
                        "Fix the record or re-download the release.")
    return value


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({type(value).__name__}, {len(text)} chars)"


def present(value: Any) -> bool:
    """False for None and for pandas' NaN placeholders of missing cells."""
    return value is not None and not (isinstance(value, float) and value != value)


def unique_ids(pairs: Iterable[tuple[Sample, str]], what: str) -> list[Sample]:
    """Samples from (sample, "file: record") pairs; a repeated sample_id is a DataError naming both."""
    seen: dict[str, str] = {}
    samples: list[Sample] = []
    for sample, origin in pairs:
        if sample.sample_id in seen:
            raise DataError(f"{origin}: duplicate {what} {sample.sample_id} (first at {seen[sample.sample_id]}). Fix the release.")
        seen[sample.sample_id] = origin
        samples.append(sample)
    return samples


def check_letter(answer: Any, letters: str, file: Path | str, where: str) -> str:
    """The gold answer must be one of ``letters`` exactly (no normalisation)."""
    text = str(answer)
    if len(text) != 1 or text not in letters:
        raise DataError(
            f"{file}: {where}: answer {answer!r} is not one of {', '.join(letters)}. "
            "Fix the record or re-download the release."
        )
    return text


def check_mode(mode: str) -> str:
    if mode not in SCORING_MODES:
        raise ValueError(f"unknown scoring mode {mode!r}; expected one of {', '.join(SCORING_MODES)}")
    return mode


# --------------------------------------------------------------------------- options

_PAREN_OPTION = re.compile(r"^\(([A-Z])\)\s?(.*)$")


def split_paren_options(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Split "stem\\n(A) …\\n(B) …" into the stem and [(letter, option text), …].

    The stem is every line before the first "(X) " line (joined with newlines, stripped); a
    non-option line after an option line continues that option (joined with a newline).
    """
    stem: list[str] = []
    options: list[list[str]] = []
    for line in text.splitlines():
        match = _PAREN_OPTION.match(line.strip())
        if match:
            options.append([match.group(1), match.group(2).strip()])
        elif options:
            if line.strip():
                options[-1][1] = f"{options[-1][1]}\n{line.strip()}"
        else:
            stem.append(line)
    return "\n".join(stem).strip(), [(letter, body) for letter, body in options]


def parse_options(text: str, letters: str, file: Path | str, where: str) -> tuple[str, tuple[str, ...]]:
    """Stem + option lines "(A) …" for exactly ``letters`` in order, else DataError."""
    stem, options = split_paren_options(text)
    found = "".join(letter for letter, _ in options)
    if found != letters:
        raise DataError(
            f"{file}: {where}: expected {len(letters)} option lines "
            f"{', '.join(f'({x})' for x in letters)} after the question, found {len(options)}"
            f"{' (' + ', '.join(f'({x})' for x in found) + ')' if found else ''}. Fix the record or re-download the release."
        )
    if not stem:
        raise DataError(f"{file}: {where}: the question text before the option lines is empty. Fix the record.")
    return stem, tuple(f"({letter}) {body}" for letter, body in options)


# --------------------------------------------------------------------------- subtitles

_TIME = re.compile(r"(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})")
_TAG = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class Cue:
    """One SRT cue: [start, end) in seconds and its text (markup removed, lines joined by a space)."""

    index: int
    start: float
    end: float
    text: str


def _seconds(stamp: str, path: Path, block: int) -> float:
    match = _TIME.search(stamp)
    if match is None:
        raise DataError(f"{path}: cue {block}: bad timestamp {stamp.strip()!r} (want HH:MM:SS,mmm). Fix or delete the file.")
    h, m, s, ms = match.groups()
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000.0


def parse_srt_text(text: str, path: Path) -> list[Cue]:
    """Parse SRT text: blocks separated by blank lines, "start --> end" line, then text lines.

    Video-MME's files wrap text in ``<font …>…</font>``; tags are stripped (lmms-eval keeps the
    text inside the font tag, same result).
    """
    cues: list[Cue] = []
    blocks = re.split(r"\n\s*\n", text.replace("\ufeff", "").replace("\r\n", "\n").replace("\r", "\n"))
    for number, block in enumerate(blocks, start=1):
        lines = [line for line in block.strip().split("\n") if line.strip()]
        arrow = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if arrow is None:
            continue  # stray index line or garbage between cues
        start_s, _, end_s = lines[arrow].partition("-->")
        body = " ".join(_TAG.sub("", line).strip() for line in lines[arrow + 1 :]).strip()
        if body:
            cues.append(Cue(len(cues), _seconds(start_s, path, number), _seconds(end_s, path, number), body))
    return cues


@lru_cache(maxsize=64)
def load_srt(path: str) -> tuple[Cue, ...]:
    """Cues of an .srt file (cached: a video's questions share one file)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read subtitle file ({exc.strerror}). Re-extract the subtitles.") from exc
    return tuple(parse_srt_text(raw.decode("utf-8", errors="replace"), Path(path)))


def cues_at(cues: Sequence[Cue], times: Sequence[float]) -> list[str]:
    """Texts of the cues showing at the given timestamps (start <= t < end), each cue once,
    in cue (= time) order."""
    hit = {cue.index for cue in cues for t in times if cue.start <= t < cue.end}
    return [cue.text for cue in cues if cue.index in hit]


# --------------------------------------------------------------------------- hub


def resolve_hub_folder(hub_id: str, revision: Optional[str], allow_download: bool = False) -> Path:
    """Local snapshot folder of a hub dataset (the ``datasets``/hub cache), without network
    unless ``allow_download``. Gated releases also need ``huggingface-cli login``."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise DataError(f"{hub_id}: reading from the Hugging Face cache needs huggingface_hub. Run `pip install huggingface_hub`.") from exc
    try:
        return Path(snapshot_download(repo_id=hub_id, repo_type="dataset", revision=revision, local_files_only=not allow_download))
    except Exception as exc:  # LocalEntryNotFoundError, GatedRepoError, RepositoryNotFoundError …
        how = "allow the download (and log in for gated datasets)" if not allow_download else "check the id, revision and your login"
        raise DataError(
            f"{hub_id}@{revision or 'main'}: no usable snapshot ({type(exc).__name__}: {exc}). "
            f"Pass a local release folder, or {how}."
        ) from exc


def snapshot_revision(folder: Path) -> Optional[str]:
    """The commit of a hub-cache snapshot folder (…/snapshots/<commit>/…), else None."""
    parts = Path(folder).resolve().parts
    for i in range(len(parts) - 1):
        if parts[i] == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", parts[i + 1]):
            return parts[i + 1]
    return None


# --------------------------------------------------------------------------- scoring


def scored_sample(sample: Sample, score: Optional[Score], error: Optional[str] = None) -> ScoredSample:
    """The scoring view of one sample. ``unparsed`` ⇔ the extraction gave no A–D letter
    (``extraction.answer is None``); an error means no score at all."""
    if error is not None or score is None:
        return ScoredSample(sample.sample_id, sample.video_key, sample.categories, None, None, error=error or "no score")
    return ScoredSample(
        sample_id=sample.sample_id,
        video_key=sample.video_key,
        categories=sample.categories,
        extracted=score.extraction.answer,
        correct=score.correct,
        unparsed=score.extraction.answer is None,
        flags=score.flags,
    )
