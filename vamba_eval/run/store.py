"""The run directory: append-only samples.jsonl (crash-safe), config.json, results.json.

A line is appended with one ``write`` on an O_APPEND descriptor and fsynced, so a kill leaves
at most one torn final line; opening the store for resume verifies the file and cuts a torn tail
(a line that does not parse) before anything is appended. Duplicate sample ids (at-least-once
delivery) resolve to the first complete line.

A full disk (ENOSPC / EDQUOT / EFBIG) is the machine's fault, never a sample's: an append that
fails is taken back (the file keeps ending on a complete line), a sample error caused by it (a
frame-cache write that failed) is refused rather than recorded, and ``DiskFullError`` says what
to do: free space, then the same command plus ``--resume``.
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, Optional

from pydantic import ValidationError

from vamba_eval.records import ResultsRecord, SampleRecord, dump_json_line

SAMPLES = "samples.jsonl"
CONFIG = "config.json"
RESULTS = "results.json"
REPORT = "report.html"


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_DISK_FULL_TEXT = re.compile(r"\[Errno (?:%s)\]" % "|".join(str(n) for n in sorted(DISK_FULL_ERRNOS)))


class RunDirError(ValueError):
    """The run directory is unusable (not a run, config mismatch on resume …)."""


class DiskFullError(RunDirError):
    """No space left where the run writes; everything recorded so far is intact (``--resume``)."""


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS


def disk_full_error(path: Path, what: str, err: BaseException, then: str = "") -> DiskFullError:
    """The message a user sees when ``path`` could not be written because the disk (or quota) is full."""
    reason = getattr(err, "strerror", None) or str(err)
    then = then or ("Nothing recorded is lost: every sample finished before this is saved in samples.jsonl "
                    "(which ends on a complete line). Free some disk space (or move the frame cache with "
                    "$VAMBA_EVAL_CACHE), then run the same command again — for `vamba-eval run`, plus --resume.")
    return DiskFullError(f"{path}: the disk is full ({reason}) while writing {what}. {then}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (tmp file + fsync + rename); a full disk is a DiskFullError."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if is_disk_full(err):
            raise disk_full_error(path, path.name, err) from None
        raise
    _fsync_dir(path.parent)


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


def disk_full_record(record: SampleRecord) -> bool:
    """A sample error that is really a full disk (e.g. the frame cache could not be written)."""
    return record.error is not None and bool(_DISK_FULL_TEXT.search(record.error.message))


class SampleWriter:
    """Append-only, fsynced writer of samples.jsonl.

    A line goes out in one ``write`` (continued after a short write) and is fsynced; if either
    fails, the bytes of this line are cut off again, so the file always ends on a complete line
    and the sample is simply not recorded (``--resume`` redoes it)."""

    def __init__(self, path: Path, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if fsync:
            _fsync_dir(Path(path).parent)

    def append(self, record: SampleRecord) -> None:
        if disk_full_record(record):  # the machine's fault, not the sample's: never a recorded failure
            raise disk_full_error(self.path.parent, f"the files of sample {record.task}/{record.sample_id} "
                                  f"({record.error.message})", OSError(errno.ENOSPC, "No space left on device"))
        data = (dump_json_line(record) + "\n").encode("utf-8")
        start = os.lseek(self.fd, 0, os.SEEK_END)
        try:
            done = 0
            while done < len(data):
                n = os.write(self.fd, data[done:])
                if n <= 0:
                    raise OSError(errno.ENOSPC, "No space left on device (short write)")
                done += n
            if self.fsync:
                os.fsync(self.fd)
        except OSError as err:
            self._take_back(start)
            if is_disk_full(err):
                raise disk_full_error(self.path, f"sample {record.task}/{record.sample_id}", err) from None
            raise OSError(err.errno, f"{self.path}: could not append sample {record.task}/{record.sample_id} "
                          f"({err.strerror or err}); the samples before it are saved: fix the cause and "
                          "continue with --resume") from err

    def _take_back(self, start: int) -> None:
        """Cut what this append wrote (best effort: ``repair_tail`` on resume cuts a torn line too)."""
        try:
            os.ftruncate(self.fd, start)
        except OSError:
            pass

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
