"""Option-binding drills (vamba_eval/train/drills.py): right answers, in each task's official format."""

from __future__ import annotations

import re

import numpy as np
import pytest

from vamba_eval.registry import get_task
from vamba_eval.train.data import task_chunk
from vamba_eval.train.drills import FIND_QUESTION, LIST_QUESTION
from vamba_eval.train.formats import prompt_from_dict

TASKS = ["lvbench", "videomme", "mlvu", "longvideobench", "mvbench"]
OPTION = re.compile(r"^\(?([A-Z])[.)]\)?\s*(.+)$")


def _options(user: str) -> dict[str, str]:
    """Letter → text from the option lines of a prompt ("(A) x" or "A. x")."""
    out = {}
    for line in user.splitlines():
        m = re.match(r"^\(([A-Z])\) (.+)$", line) or re.match(r"^([A-Z])\. (.+)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


@pytest.mark.parametrize("name", TASKS)
def test_drills_are_correct_in_the_official_format(name: str) -> None:
    _, examples = task_chunk(name, 11, 0, fast=True, drills=2)
    drills = [e for e in examples if e["source"] == f"{name}:drill"]
    plain = [e for e in examples if e["source"] == name and e["kind"] == "qa"]
    assert drills and len(drills) % 2 == 0 and len(drills) <= 2 * len(plain)  # none for duplicate options
    task = get_task(name)
    kinds = set()
    for ex in drills:
        user = ex["prompt"]["user"]
        options = _options(user)
        assert len(options) >= 2, user
        if LIST_QUESTION in user:
            kinds.add("list")
            assert ex["target"].startswith("Options: ")
            pairs = re.findall(r" (.+?) \(([A-Z])\)(?:,|$)", ex["target"][len("Options:"):])
            assert {letter: text for text, letter in pairs} == options
            assert ex["prompt"]["prefix"] == ""
        else:
            kinds.add("find")
            asked = re.search(r"Which option is exactly (.+)\?", user).group(1)
            gold = next(letter for letter, text in options.items() if text == asked)
            reply = ex["target"]
            prompt = prompt_from_dict(ex["prompt"])
            # the reply, continued from the prompt's assistant prefix, names the asked option's letter
            full = prompt.assistant_prefix + reply
            assert re.search(rf"\b{gold}\b", full), (full, gold)
            assert not any(re.search(rf"(^|\(){x}\b", full) for x in options if x != gold)
    assert kinds == {"list", "find"}
    assert task.name == name


def test_no_drills_by_default_and_recipe_default_on() -> None:
    from vamba_eval.train.recipe import preset

    _, examples = task_chunk("lvbench", 11, 0, fast=True)
    assert not [e for e in examples if e["source"].endswith(":drill")]
    assert preset("gpu").data.binding_drills == 4


def test_duplicate_option_texts_get_no_find_drill() -> None:
    import dataclasses

    from vamba_eval.train.drills import drill_examples
    from vamba_eval.types import Sample, VideoRef

    task = get_task("lvbench")
    s = Sample(task="lvbench", sample_id="x", video=VideoRef(path="v.mp4"), question="q?",
               options=("(A) 1", "(B) 1", "(C) 2", "(D) 3"), answer="A")
    assert drill_examples(task, s, 0, (0.0, 1.0), 2, np.random.default_rng(0)) == []
    ok = dataclasses.replace(s, options=("(A) 1", "(B) 4", "(C) 2", "(D) 3"))
    got = drill_examples(task, ok, 0, (0.0, 1.0), 2, np.random.default_rng(0))
    assert len(got) == 2 and FIND_QUESTION.split('{')[0] in got[1]["prompt"]["user"]


class _Counts:
    """The one TrainSet method pick_kind reads: examples per kind."""

    def __init__(self, **counts: int) -> None:
        self.counts = counts

    def count(self, kind: str) -> int:
        return self.counts.get(kind, 0)


def test_pick_kind_draws_each_kind_by_share_and_falls_back_to_qa() -> None:
    from collections import Counter

    from vamba_eval.train.loop import pick_kind
    from vamba_eval.train.recipe import StageRecipe

    stage = StageRecipe(steps=100, lr=1e-3, caption_fraction=0.2, drill_fraction=0.1, open_fraction=0.3)
    rng = np.random.default_rng(0)
    kinds = Counter(pick_kind(_Counts(qa=5, caption=5, drill=5, open=5), stage, rng) for _ in range(4000))
    share = {k: kinds[k] / 4000 for k in ("caption", "drill", "open", "qa")}
    assert all(abs(share[k] - want) < 0.03 for k, want in (("caption", 0.2), ("drill", 0.1), ("open", 0.3),
                                                           ("qa", 0.4))), share
    only_qa = {pick_kind(_Counts(qa=1, caption=1), stage, rng) for _ in range(300)}
    assert only_qa == {"qa", "caption"}  # drill / open batches give way to qa when there are none
    assert {pick_kind(_Counts(caption=1), stage, rng) for _ in range(50)} == {"caption"}


def _has_run(seq: list[int], run: list[int]) -> bool:
    return any(seq[i:i + len(run)] == run for i in range(len(seq) - len(run) + 1))


def test_drill_option_text_tokenises_as_in_the_option_lines() -> None:
    """The asked / listed text must be the same token ids as in its option line, or there is nothing to
    match: a quoted or line-initial "HAT" is 'H' 'AT' in byte-level BPE, the option's " HAT" is 'ĠHAT'."""
    from vamba_eval.train.tokenizer import train_bpe, training_texts

    examples = [e for name in TASKS for e in task_chunk(name, 12, 0, fast=True, drills=2)[1]]
    tok = train_bpe(training_texts(examples), 600)
    enc = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    checked = 0
    for ex in (e for e in examples if e["kind"] == "drill"):
        user = ex["prompt"]["user"]
        lines = {text: line for line in user.splitlines() for text in [_options(line).get(line[:3].strip("(.) "))]
                 if text}
        found = re.search(r"Which option is exactly (.+)\?", user)
        asked = [found.group(1)] if found else [m for m in re.findall(r" (.+?) \([A-Z]\)", ex["target"])]
        for text in asked:
            line_ids = enc(lines[text])
            assert _has_run(line_ids, enc(" " + text)), (text, lines[text])
            assert _has_run(enc(user if found else ex["target"]), enc(" " + text)), text
            checked += 1
    assert checked > 20
