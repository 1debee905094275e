"""Fault-injection tools for tests/test_faults.py: a disk that fills up, torn lines, and the Ray
actor processes of THIS test process (found by walking parent pids, never by name alone)."""

from __future__ import annotations

import errno
import os
import random
import signal
import threading
import time
from pathlib import Path

from vamba_eval.run import store


def n_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def tear_last_line(path: Path, rng: random.Random) -> None:
    """Cut the file inside its last record (what a kill in the middle of that ``write`` leaves)."""
    data = path.read_bytes() if path.exists() else b""
    if data.count(b"\n") < 1:
        return
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    cut = rng.randrange(start + 1, len(data) - 1)
    with open(path, "r+b") as fh:
        fh.truncate(cut)


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


ENOSPC = OSError(errno.ENOSPC, "No space left on device")


class DiskFiller:
    """Fakes a disk that fills up: after ``ok`` good appends to samples.jsonl, the next one is a
    short write and everything after that fails with ENOSPC (``how="write"``), or the fsync of
    the next append fails (``how="fsync"``), or the fsync of a file named ``name`` fails."""

    def __init__(self, monkeypatch, how: str, ok: int = 0, name: str = store.SAMPLES) -> None:
        self.how, self.ok, self.name, self.appends, self.full = how, ok, name, 0, False
        self.real_write, self.real_fsync = os.write, os.fsync
        monkeypatch.setattr(os, "write", self.write)
        monkeypatch.setattr(os, "fsync", self.fsync)

    def _ours(self, fd: int) -> bool:
        path = _fd_path(fd)
        return os.path.basename(path) == self.name or (self.name != store.SAMPLES and self.name in path)

    def write(self, fd: int, data) -> int:
        if self.how != "write" or not self._ours(fd):
            return self.real_write(fd, data)
        if self.full:
            raise ENOSPC
        if self.appends < self.ok:
            self.appends += 1
            return self.real_write(fd, data)
        self.full = True  # room for half of this line, then nothing
        return self.real_write(fd, bytes(data[: len(data) // 2]))

    def fsync(self, fd: int) -> None:
        if self.how == "fsync" and self._ours(fd):
            if self.appends >= self.ok:
                self.full = True
                raise ENOSPC
            self.appends += 1
        self.real_fsync(fd)


def _descends_from(pid: int, root: int) -> bool:
    for _ in range(16):
        if pid == root:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid <= 1:
            return False
    return False


def eval_worker_pids() -> list[int]:
    """Live EvalWorker actor processes of THIS test process's Ray cluster (never anyone else's)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmd.startswith(b"ray::EvalWorker") and _descends_from(int(entry.name), os.getpid()):
            out.append(int(entry.name))
    return sorted(out)


class ActorKiller(threading.Thread):
    """SIGKILLs a random live EvalWorker actor every ``gap`` seconds (after the first record
    of each round), ``kills`` times."""

    def __init__(self, samples: Path, kills: int, seed: int, gap: tuple[float, float]) -> None:
        super().__init__(daemon=True)
        self.samples, self.kills, self.rng, self.gap = samples, kills, random.Random(seed), gap
        self.killed: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while len(self.killed) < self.kills and not self.stop.is_set():
            lines = n_lines(self.samples)
            while n_lines(self.samples) <= lines and not self.stop.is_set():  # progress between kills
                time.sleep(0.01)
            if self.stop.wait(self.rng.uniform(*self.gap)):
                return
            pids = eval_worker_pids()
            if pids:
                pid = self.rng.choice(pids)
                os.kill(pid, signal.SIGKILL)
                self.killed.append(pid)
