"""A deterministic synthetic video world and demo releases in the benchmarks' on-disk formats.

    world.py      scene scripts (coloured scenes, a big digit/word, bouncing shapes, events),
                  ``random_script(rng, duration_s)``, ``caption`` / ``scene_caption``
    render.py     ``render(script, path)`` → h264 mp4 (PyAV), ``render_frame(script, t)``
    questions.py  multiple-choice questions with known answers (LVBench categories,
                  Video-MME task types)
    lvbench.py    ``write_release`` in LVBench's format (+ optional parquet repack)
    videomme.py   ``write_release`` in Video-MME's format (parquet + mp4 + srt)

The demo writers are ``write_demo(folder, seed) -> Path`` functions; the same seed gives
byte-identical annotation files and videos. Runs on them must be labelled with
``DEMO_NOTICE.format(fmt=...)``: they say nothing about the real benchmarks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

DEMO_NOTICE = "synthetic demo split in {fmt} format — not {fmt}"


def write_lvbench_demo(folder: Union[str, Path], seed: int = 0) -> Path:
    """The LVBench-format demo release (10 videos × 5 questions) under ``folder``; returns it."""
    from vamba_eval.synth.lvbench import write_release

    return write_release(folder, seed=seed)


def write_videomme_demo(folder: Union[str, Path], seed: int = 0) -> Path:
    """The Video-MME-format demo release (15 videos × 3 questions) under ``folder``; returns it."""
    from vamba_eval.synth.videomme import write_release

    return write_release(folder, seed=seed)


__all__ = ["DEMO_NOTICE", "write_lvbench_demo", "write_videomme_demo"]
