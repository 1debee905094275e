"""TASK CARD — LongVideoBench, TEST split (``lvb_test_wo_gt.json``, 5,341 questions, no labels).

Everything as in ``longvideobench`` (same release folder, prompt, interleaving, parser), but the
split has no ``correct_choice``: every sample is scored ``correct=None`` (no accuracy is
computed), and the leaderboard file is ``TASK.extra["submission"](records)`` → {id: raw
prediction} (lmms-eval ``longvideobench_test_v``). Point it at the release root, e.g.
``--data-dir longvideobench_test=/data/LongVideoBench``.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from vamba_eval.tasks import longvideobench as lvb

NAME = lvb.TEST_NAME
TITLE = "LongVideoBench (test)"

TASK = replace(
    lvb.TASK,
    name=NAME,
    title=TITLE,
    card=(__doc__ or "") + "\n" + lvb.TASK.card,
    load=lvb.load_test,
    aggregate=partial(lvb.aggregate, name=NAME, title=TITLE),
)
