"""Measurement plumbing: environment record, synchronised timing, peak memory, matmul ceiling, OOM.

Everything here works on CPU too (timings only; memory fields are None there).
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import torch

PACKAGES = ("torch", "transformers", "triton", "fla-core", "mamba-ssm", "causal-conv1d")
GIT_SHA_ENV = ("VAMBA_EVAL_GIT_SHA", "GIT_SHA")
GB = 1e9


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_sha(start: Optional[Path] = None) -> Optional[str]:
    """HEAD's commit, read from the environment or the ``.git`` folder (git itself is not run)."""
    for var in GIT_SHA_ENV:
        if os.environ.get(var, "").strip():
            return os.environ[var].strip()
    here = Path(start or Path(__file__)).resolve()
    for folder in [here, *here.parents]:
        git = folder / ".git"
        if git.is_file():  # a worktree: "gitdir: PATH"
            text = git.read_text(encoding="utf-8", errors="replace").strip()
            git = (folder / text.partition("gitdir:")[2].strip()).resolve()
        if git.is_dir():
            return _read_head(git)
    return None


def _read_head(git: Path) -> Optional[str]:
    try:
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if not head.startswith("ref:"):
        return head or None
    ref = head[4:].strip()
    common = git
    if (git / "commondir").is_file():  # worktrees keep refs in the main repository
        common = (git / (git / "commondir").read_text(encoding="utf-8").strip()).resolve()
    for base in (git, common):
        if (base / ref).is_file():
            return (base / ref).read_text(encoding="utf-8").strip() or None
        packed = base / "packed-refs"
        if packed.is_file():
            for line in packed.read_text(encoding="utf-8").splitlines():
                sha, _, name = line.partition(" ")
                if name.strip() == ref:
                    return sha
    return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def environment(device: torch.device) -> dict[str, Any]:
    return {"gpu": device_name(device), "device": str(device), "versions": versions(),
            "python": platform.python_version(), "cuda": torch.version.cuda,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_sha": git_sha()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of ``fn()`` with the device synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def repeat(device: torch.device, fn: Callable[[], Any], repeats: int, budget_s: float) -> tuple[list[float], Any]:
    """Time ``fn`` up to ``repeats`` times, stopping early once ``budget_s`` seconds were spent (≥ 1 run)."""
    times: list[float] = []
    out: Any = None
    for _ in range(max(1, repeats)):
        out = None  # free the previous result before the next run
        t, out = timed(device, fn)
        times.append(t)
        if sum(times) >= budget_s:
            break
    return times, out


def median(xs: list[float]) -> Optional[float]:
    return statistics.median(xs) if xs else None


class PeakMemory:
    """Peak allocated / reserved bytes of a block on CUDA (None elsewhere); resets the peaks first."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.allocated_gb: Optional[float] = None
        self.reserved_gb: Optional[float] = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.read()

    def read(self) -> None:
        if self.device.type == "cuda":
            self.allocated_gb = torch.cuda.max_memory_allocated(self.device) / GB
            self.reserved_gb = torch.cuda.max_memory_reserved(self.device) / GB


def allocated_gb(device: torch.device) -> Optional[float]:
    return torch.cuda.memory_allocated(device) / GB if device.type == "cuda" else None


def release(device: torch.device, collect: bool = False) -> None:
    """Give cached CUDA blocks back (peaks of the next point start clean); ``collect``: also run the
    garbage collector (after an OOM: tracebacks hold tensors in cycles). A no-op on CPU unless ``collect``."""
    if collect or device.type == "cuda":
        gc.collect()  # ≈ 0.2 s with transformers imported: per point on CUDA, only after faults on CPU
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError)


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def matmul_ceiling(device: torch.device, dtype: torch.dtype, n: Optional[int] = None, repeats: int = 20) -> dict[str, Any]:
    """Dense GEMM throughput (TFLOP/s) measured now: the denominator of MFU.

    n×n×n matrix products on random data (n = 8192 on CUDA, 512 on CPU), median of ``repeats`` after
    ten warm-ups (clocks up).
    """
    n = n or (8192 if device.type == "cuda" else 512)
    times = _gemm_times(device, dtype, n, repeats)
    release(device)
    return {"tflops": 2.0 * n ** 3 / statistics.median(times) / 1e12, "n": n,
            "dtype": str(dtype).replace("torch.", ""), "repeats": len(times)}


def _gemm_times(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> list[float]:
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    for _ in range(10):
        torch.matmul(a, b)
    return repeat(device, lambda: torch.matmul(a, b), repeats, budget_s=float("inf"))[0]
