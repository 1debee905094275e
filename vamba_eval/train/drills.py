"""Option-binding drills: extra text-answerable questions in each task's own prompt format.

Why (issue 6, scripts/diagnostics/README.md): a tiny LM trained on video QA alone does not learn to
map the answer it has in mind to the option's LETTER: single-answer questions give one bit of binding
signal per example and training sits on a plateau at chance. Dense drills — every option's letter
supervised — break it once the option text is the same tokens in question and option line (see
FIND_QUESTION): held-out "find" accuracy 0.86 after 2,750 steps × 128 on an H100 with hidden 128,
4 layers, lr 3e-3 (``drills_sweep_h100_360s.log``). The recipe trains them first on a blank video
(``stages.run_binding``), then as a share of the video stages. Each drill keeps the sample's video and
goes through the task's official ``prompt`` with only the question replaced, so the binding is
learnt in the formats it is used in:

    list   "List every option, each followed by its letter."  →  "Options: BOX (C), CIRCLE (A), …" (random order)
    find   "Which option is exactly BOX?"                     →  the official gold reply for that letter

A find drill also carries ``answer`` (the asked text) and ``others`` (the other options) for the answer-content
loss (forward.answer_aux_loss, batches.answer_token).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from vamba_eval.task_api import PromptContext
from vamba_eval.train.formats import OPTION_RE, gold_response, option_texts, prompt_dict
from vamba_eval.types import Sample

LIST_QUESTION = "List every option, each followed by its letter."
LIST_REPLY = "Options:"
# the option text follows a space, as in the option lines, so it tokenises to the same ids there and here
# (a quoted or line-initial "HAT" is 'H' 'AT', the option's " HAT" one token 'ĠHAT': no match to learn)
FIND_QUESTION = "Which option is exactly {text}?"


def _letter(i: int) -> str:
    return chr(ord("A") + i)


def _relabel(sample: Sample, texts: list[str], question: str, answer: int) -> Sample:
    """``sample`` with its options reordered to ``texts`` (same letter style), a new question and gold."""
    styled = []
    for i, (old, text) in enumerate(zip(sample.options, texts)):
        lettered = old.strip()
        if OPTION_RE.match(old) is None:
            styled.append(text)  # unlettered options: the task letters them itself
        elif lettered.startswith("("):
            styled.append(f"({_letter(i)}) {text}")
        else:  # "A. x" / "A) x": keep the release's separator
            styled.append(f"{_letter(i)}{lettered[1]} {text}")
    return dataclasses.replace(sample, question=question, options=tuple(styled), answer=_letter(answer))


def drill_examples(task: Any, sample: Sample, video: int, times: tuple[float, ...], count: int,
                   rng: np.random.Generator) -> list[dict[str, Any]]:
    """``count`` drills for ``sample`` (alternating list / find), options shuffled for each one."""
    texts = option_texts(sample)
    if len(texts) < 2 or len(set(texts)) < len(texts):
        return []  # duplicate option texts: "which option is X" would have two answers
    out = []
    for k in range(count):
        order = [int(i) for i in rng.permutation(len(texts))]
        shuffled = [texts[i] for i in order]
        pick = int(rng.integers(len(texts)))
        if k % 2 == 0:
            drill = _relabel(sample, shuffled, LIST_QUESTION, pick)
            prompt = dataclasses.replace(task.prompt(drill, PromptContext(times, False)), assistant_prefix="")
            listing = [int(i) for i in rng.permutation(len(texts))]
            target = LIST_REPLY + ",".join(f" {shuffled[i]} ({_letter(i)})" for i in listing)
        else:
            drill = _relabel(sample, shuffled, FIND_QUESTION.format(text=shuffled[pick]), pick)
            prompt = task.prompt(drill, PromptContext(times, False))
            target = gold_response(task, drill, prompt)
        asked = {} if k % 2 == 0 else {"answer": shuffled[pick], "others": [t for t in shuffled if t != shuffled[pick]]}
        out.append({"kind": "drill", "source": f"{task.name}:drill", "video": video, "prompt": prompt_dict(prompt),
                    "target": target, **asked})
    return out
