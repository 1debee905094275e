"""Small on-disk bookkeeping of an ablation directory: per-unit ``state.json``, the event log, locks.

A unit (a seed's teacher, or one cell × seed) records each finished step in its ``state.json``
(written atomically, after the step's files are complete). A step without a record is unfinished:
its folder is removed and the step runs again, so an interrupted unit restarts cleanly.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from vamba_eval.run.store import atomic_write_text

STATE = "state.json"
LOG = "log.jsonl"
LOCK = ".lock"


class LockedError(RuntimeError):
    """Another live ``ablate`` process works on this unit."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class UnitState:
    """``state.json`` of one unit folder: ``identity`` (what it was built from) and finished ``steps``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / STATE
        self.data: dict[str, Any] = {}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text(encoding="utf-8"))
            except ValueError:
                self.data = {}  # torn by a kill: treat as nothing finished
        self.data.setdefault("steps", {})

    @property
    def identity(self) -> Optional[str]:
        return self.data.get("identity")

    def done(self, step: str) -> bool:
        return step in self.data["steps"]

    def info(self, step: str) -> dict[str, Any]:
        return self.data["steps"].get(step, {})

    def reset(self, identity: str, **meta: Any) -> None:
        """Forget everything (the folder's contents are removed, except the lock) and adopt ``identity``."""
        if self.folder.exists():
            for entry in self.folder.iterdir():
                if entry.name == LOCK:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        self.data = {"identity": identity, "steps": {}, **meta}
        self.save()

    def forget(self, *steps: str) -> None:
        for s in steps:
            self.data["steps"].pop(s, None)
        self.save()

    def mark(self, step: str, **info: Any) -> None:
        self.data["steps"][step] = {"finished": now(), **info}
        self.save()

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.data, indent=1, sort_keys=True, default=str) + "\n")


class EventLog:
    """Prints and appends one JSON line per event to ``OUT/log.jsonl`` (start / done / skip / stop …)."""

    def __init__(self, out: Path, part: str = "main") -> None:
        self.path = Path(out) / LOG
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.part = part

    def __call__(self, msg: str, **record: Any) -> None:
        print(msg, flush=True)
        line = json.dumps({"time": round(time.time(), 3), "part": self.part, "msg": msg, **record}, default=str)
        with open(self.path, "a", encoding="utf-8") as fh:  # one short append: safe across worker processes
            fh.write(line + "\n")

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.path.parent)


def read_events(out: Path) -> list[dict[str, Any]]:
    path = Path(out) / LOG
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class UnitLock:
    """``folder/.lock`` held while a process works on the unit; a stale lock (dead pid) is taken over."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK

    def __enter__(self) -> "UnitLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": now()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    held = json.loads(self.path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    held = {}
                if held.get("host") == me["host"] and isinstance(held.get("pid"), int) and _alive(held["pid"]) \
                        and held["pid"] != me["pid"]:
                    raise LockedError(f"{self.path.parent}: in use by process {held['pid']} (since {held.get('since')})")
                self.path.unlink(missing_ok=True)  # stale: its process is gone (or another machine's copy)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(me))
            return self
        raise LockedError(f"{self.path}: could not take the lock")

    def __exit__(self, *exc: Any) -> None:
        self.path.unlink(missing_ok=True)
