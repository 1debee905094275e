"""The run directory: append-only samples.jsonl (crash-safe), config.json, results.json.

A line is appended with one ``write`` on an O_APPEND descriptor and fsynced, so a kill leaves
at most one torn final line; opening the store for resume verifies the file and cuts a torn tail
(a line that does not parse) before anything is appended. Duplicate sample ids (at-least-once
delivery) resolve to the first complete line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Optional

from pydantic import ValidationError

from vamba_eval.records import ResultsRecord, SampleRecord, dump_json_line

SAMPLES = "samples.jsonl"
CONFIG = "config.json"
RESULTS = "results.json"
REPORT = "report.html"


class RunDirError(ValueError):
    """The run directory is unusable (not a run, config mismatch on resume …)."""


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def repair_tail(path: Path) -> int:
    """Cut a torn last line (no newline, or not JSON) off ``path``; returns the bytes removed."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data:
        return 0
    keep = len(data)
    if not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
    else:
        last_start = data.rfind(b"\n", 0, len(data) - 1) + 1
        try:
            json.loads(data[last_start:])
        except ValueError:
            keep = last_start
    if keep < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
    return len(data) - keep


def iter_records(path: Path) -> Iterator[SampleRecord]:
    """Complete records of a samples.jsonl; a bad line that is not the last is an error."""
    if not path.exists():
        return
    lines = path.read_bytes().split(b"\n")
    for no, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            yield SampleRecord.model_validate_json(raw)
        except (ValidationError, ValueError) as err:
            if no == len(lines):  # torn tail of a killed run: ignored (repaired on resume)
                return
            raise RunDirError(f"{path}:{no}: not a valid sample record ({str(err).splitlines()[0]}); "
                              "the file was edited or corrupted — remove that line and re-run with --resume") from None


def load_records(path: Path) -> dict[tuple[str, str], SampleRecord]:
    """(task, sample_id) → record; the first complete line of an id wins."""
    out: dict[tuple[str, str], SampleRecord] = {}
    for rec in iter_records(path):
        out.setdefault((rec.task, rec.sample_id), rec)
    return out


class SampleWriter:
    """Append-only, fsynced writer of samples.jsonl."""

    def __init__(self, path: Path, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: SampleRecord) -> None:
        data = (dump_json_line(record) + "\n").encode("utf-8")
        written = os.write(self.fd, data)
        if written != len(data):  # a short write (disk full): cut it so the file stays valid
            os.ftruncate(self.fd, os.lseek(self.fd, 0, os.SEEK_END) - written)
            raise OSError(f"{self.path}: short write ({written}/{len(data)} bytes); is the disk full?")
        if self.fsync:
            os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> "SampleWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_results(run_dir: Path) -> Optional[ResultsRecord]:
    path = Path(run_dir) / RESULTS
    if not path.exists():
        return None
    return ResultsRecord.model_validate_json(path.read_text(encoding="utf-8"))


def read_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise RunDirError(f"{run_dir}: no {CONFIG}; is this a vamba-eval run directory?")
    return json.loads(path.read_text(encoding="utf-8"))
