"""Real run directories on the built-in demo data, shared by the leaderboard/export tests.

The demo releases are written once per test session into one folder under pytest's base temp
(the writer is race-safe), so each test module pays only for its own short runs.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def demo_cache(tmp_path_factory: Any) -> Path:
    path = Path(tmp_path_factory.getbasetemp()) / "vamba-demo-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def cache_env(path: Path) -> Iterator[Path]:
    old = os.environ.get("VAMBA_EVAL_CACHE")
    os.environ["VAMBA_EVAL_CACHE"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("VAMBA_EVAL_CACHE", None)
        else:
            os.environ["VAMBA_EVAL_CACHE"] = old


def demo_run(tmp_path_factory: Any, name: str, **kwargs: Any) -> Path:
    """``vamba_eval.evaluate`` on the demo data (no report) into a fresh directory."""
    from vamba_eval import evaluate

    out = tmp_path_factory.mktemp("runs") / name
    with cache_env(demo_cache(tmp_path_factory)):
        evaluate(output=str(out), progress=False, report=kwargs.pop("report", False), **kwargs)
    return out
