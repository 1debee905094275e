"""vamba-eval: exact, fast, resumable evaluation of long-video multimodal models, built around VAMBA."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def evaluate(*args: Any, **kwargs: Any) -> Any:
    """Run an evaluation; see :func:`vamba_eval.run.api.evaluate`."""
    from vamba_eval.run.api import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


__all__ = ["evaluate", "__version__"]
