"""What the model should answer, in each benchmark's own format, and extra prompt templates.

``gold_response`` picks the reply the task's OFFICIAL scorer accepts for the gold letter (checked
by calling the scorer), so a new task module trains in its own answer format without code here:
after an assistant prefix that opens a bracket ("Best option:(") the reply is "A) text", else "A".

``open_question`` asks the question without options (the answer is the gold option's text).

``template_variants`` re-asks a multiple-choice sample in the prompt templates of the benchmarks'
specs (MVBench, MLVU, LongVideoBench wording; shared/specs/benchmarks.md) with the options
shuffled, so the model reads option text instead of memorising letter priors.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import numpy as np

from vamba_eval.types import Prompt, Sample

OPTION_RE = re.compile(r"^\s*\(?([A-J])\s*[\)\.:]\s*(.*)$", re.S)
CAPTION_PROMPT = "Describe the video scene by scene."
MVBENCH_SYSTEM = ("Carefully watch the video and pay attention to the cause and sequence of events, the detail and "
                  "movement of objects, and the action and pose of persons. Based on your observations, select the "
                  "best option that accurately addresses the question.")
MLVU_SYSTEM = ("Carefully watch this video and pay attention to every detail. Based on your observations, select "
               "the best option that accurately addresses the question.")
LVB_SUFFIX = "Answer with the option's letter from the given choices directly."


class FormatError(ValueError):
    """No reply in the candidate formats passes the task's official scorer."""


def option_texts(sample: Sample) -> list[str]:
    """The options without their letter prefixes ("(A) BOX" / "A. BOX" → "BOX")."""
    out = []
    for opt in sample.options:
        m = OPTION_RE.match(opt)
        out.append(m.group(2).strip() if m else opt.strip())
    return out


def gold_text(sample: Sample) -> str:
    """The gold option's text ("" without options or a gold letter)."""
    if not sample.options or not sample.answer:
        return ""
    return option_texts(sample)[ord(sample.answer) - ord("A")]


def candidate_replies(sample: Sample, prompt: Prompt) -> list[str]:
    letter = sample.answer
    text = gold_text(sample)
    first = [f"{letter}) {text}"] if prompt.assistant_prefix.rstrip().endswith("(") else []
    return first + [letter, f"({letter}) {text}", f"{letter}. {text}", f"{letter}) {text}"]


def gold_response(task: Any, sample: Sample, prompt: Prompt) -> str:
    """The first candidate reply the task's official scorer marks correct."""
    for reply in candidate_replies(sample, prompt):
        verdict = task.score(reply, sample, "official")
        if verdict.correct:
            return reply
    raise FormatError(f"{task.name} sample {sample.sample_id}: no candidate reply is scored correct "
                      f"(tried {candidate_replies(sample, prompt)!r}); add its format to formats.candidate_replies")


def _shuffled(sample: Sample, rng: np.random.Generator) -> tuple[str, list[str], str]:
    texts = option_texts(sample)
    order = [int(i) for i in rng.permutation(len(texts))]
    gold = ord(sample.answer) - ord("A")
    return sample.question, [texts[i] for i in order], chr(ord("A") + order.index(gold))


def template_variant(sample: Sample, rng: np.random.Generator) -> Optional[tuple[Prompt, str]]:
    """One spec template (MVBench / MLVU / LongVideoBench wording), options shuffled → (prompt, reply)."""
    if not sample.options or not sample.answer:
        return None
    question, texts, letter = _shuffled(sample, rng)
    gold_text = texts[ord(letter) - ord("A")]
    kind = int(rng.integers(3))
    if kind == 2:
        lines = [f"Question: {question}", *[f"{chr(65 + i)}. {t}" for i, t in enumerate(texts)], LVB_SUFFIX]
        return Prompt(user="\n".join(lines)), letter
    opts = "\n".join(f"({chr(65 + i)}) {t}" for i, t in enumerate(texts))
    user = f"Question: {question}\nOptions:\n{opts}\nOnly give the best option."
    if kind == 0:
        return Prompt(user=user, system=MVBENCH_SYSTEM, assistant_prefix="Best option:("), f"{letter}) {gold_text}"
    return Prompt(user=user, system=MLVU_SYSTEM, assistant_prefix="Best Option: ("), f"{letter}) {gold_text}"


OPEN_SUFFIX = "Answer in a few words."


def open_question(sample: Sample) -> Optional[tuple[Prompt, str]]:
    """The question WITHOUT its options → (prompt, the gold option's text): the video facts a question
    asks about, supervised densely and apart from the letter binding."""
    if not sample.options or not sample.answer:
        return None
    return Prompt(user=f"Question: {sample.question}\n{OPEN_SUFFIX}"), gold_text(sample)


def prompt_dict(prompt: Prompt) -> dict[str, Any]:
    return {"system": prompt.system, "user": prompt.user, "prefix": prompt.assistant_prefix}


def prompt_from_dict(d: dict[str, Any]) -> Prompt:
    return Prompt(user=d["user"], system=d.get("system"), assistant_prefix=d.get("prefix") or "")
