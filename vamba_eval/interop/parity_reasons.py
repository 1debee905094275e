"""Why official and lmms-eval scoring disagree: the known divergences (shared/specs/benchmarks.md,
the task cards in ``tasks/*.py``) and the per-sample explanation of a disagreement.

``Verdict`` is one scorer's view of one response: the extracted answer, right / wrong / excluded
(``correct`` None: left out of the denominator), the rule and the flags it raised. ``explain`` names
the divergence behind a differing pair, from the task and the flags, falling back to the two
extractions side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

KNOWN: dict[str, list[str]] = {
    "videomme": [
        "Official (eval_your_results.py) leaves answers it cannot extract OUT of the denominator; "
        "lmms-eval counts them wrong.",
        "Both strip the same answer prefixes (the official list's two missing commas included) and take the first A–D; "
        "lmms-eval ≥ 0.6 logs its own extractor (extract_mcq_answer: the highest-priority, last letter).",
        "lmms-eval's no-subtitle prompt says 'based on the video and the subtitles' and ends with its post_prompt.",
    ],
    "lvbench": [
        "The official repo's helper reads the FIRST character after cutting at ')' ('The answer is C' → 'T', wrong); "
        "lmms-eval takes the first capital A–D after removing answer prefixes (≥ 0.6: extract_mcq_answer).",
        "The official scorer counts a question toward every category in its list; lmms-eval reports only the overall mean.",
    ],
    "mlvu": [
        "Same per-sample check (character before the first ')', else the whole answer must equal the letter) in both modes; "
        "lmms-eval ≥ 0.6 logs extract_mcq_answer instead.",
        "M-Avg: official = mean over the evaluated tasks; lmms-eval divides by ALL 7 dev task types (absent ones count 0).",
        "Duplicate candidates: the official template maps the answer to the LAST matching index.",
    ],
    "mvbench": [
        "Official check_ans: first token of '(' + output vs the gold '(x) text' — an empty output becomes '(' and counts "
        "CORRECT; lmms-eval leaves empty outputs out of the denominator.",
        "Gold letter: official = LAST candidate equal to the answer, lmms-eval = FIRST.",
        "lmms-eval normalises with mcq_acc (first stand-alone A–E after punctuation stripping); the official check is a "
        "substring test on the first token.",
        "Prompt: the official assistant prefix 'Best option:(' is absent from lmms-eval's prompt, so its outputs rarely "
        "start inside the parenthesis the official check expects.",
    ],
    "longvideobench": [
        "Same parser (the benchmark author's); when it finds no letter both answer RANDOMLY: ours is seeded per sample id, "
        "lmms-eval's comes from the global RNG (order dependent), so only those samples can differ.",
    ],
    "longvideobench_test": ["Unlabelled split: nothing is scored in either mode."],
}


@dataclass(frozen=True)
class Verdict:
    extracted: Optional[str]
    correct: Optional[bool]
    rule: str = ""
    flags: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return {True: "right", False: "wrong", None: "excluded"}[self.correct]


def from_fields(fields: dict[str, Any]) -> Verdict:
    """A verdict from ``run.process.score_fields`` output."""
    return Verdict(fields.get("extracted"), fields.get("correct"), fields.get("extraction_rule", ""),
                   tuple(fields.get("flags") or ()))


def logged_verdict(task: str, payload: dict[str, Any]) -> Optional[Verdict]:
    """What lmms-eval itself logged for a doc (its ``process_results`` output), as a Verdict."""
    if not payload:
        return None
    value = next(iter(payload.values()))
    if isinstance(value, (bool, int, float)):
        return Verdict(None, bool(value), "lmms-eval (logged)")
    if not isinstance(value, dict):
        return None
    if task == "mvbench":  # pred_answer is the raw output; empty outputs are left out of the denominator
        if value.get("pred_answer") == "":
            return Verdict(None, None, "lmms-eval (logged)", ("empty_output_excluded",))
        return Verdict(None, float(value.get("score") or 0) > 0, "lmms-eval (logged)")
    pred = value.get("pred_answer", value.get("parsed_pred"))
    if "answer" in value:
        return Verdict(None if pred in (None, "") else str(pred), pred == value["answer"], "lmms-eval (logged)")
    if "score" in value:
        return Verdict(None if pred in (None, "") else str(pred), float(value["score"]) > 0, "lmms-eval (logged)")
    return None


def _specific(task: str, off: Verdict, lmm: Verdict, response: str) -> Optional[str]:
    if task == "videomme" and off.correct is None and lmm.correct is False:
        return "no answer extracted: official excludes it from the denominator, lmms-eval counts it wrong"
    if task == "mvbench":
        if "empty_output_counted_correct" in off.flags or "vacuous_output_counted_correct" in off.flags:
            return "empty output: official check_ans sees '(' ⊂ '(x)' and counts it correct; lmms-eval excludes it"
        if "empty_output_excluded" in lmm.flags:
            return "empty output: lmms-eval leaves it out of the denominator"
        if any("gold" in f or "duplicate" in f for f in off.flags + lmm.flags):
            return "gold letter: official takes the LAST matching candidate, lmms-eval the FIRST"
        return ("official check_ans (first token of '(' + output, substring of '(x)') vs lmms-eval mcq_acc "
                "(first stand-alone A–E)")
    if task == "lvbench" and off.extracted != lmm.extracted:
        return ("official helper reads the first character (after cutting at ')'); lmms-eval's regex takes the first "
                "capital A–D after removing answer prefixes")
    if task == "mlvu" and any(f in off.flags for f in ("duplicate_candidates", "answer_duplicated_gold_last",
                                                         "answer_not_in_candidates")):
        return "gold letter: duplicate candidates / answer not among the candidates (official maps to the LAST index)"
    if task.startswith("longvideobench") and any(f.startswith("fallback") or f == "random_fallback"
                                                 for f in off.flags + lmm.flags):
        return "random fallback letter: ours seeded per sample id, lmms-eval's from the global RNG"
    return None


def explain(task: str, off: Verdict, lmm: Verdict, response: str) -> str:
    """Why official (``off``) and lmms-eval (``lmm``) verdicts on one response differ."""
    return _specific(task, off, lmm, response) or (
        f"extraction differs: official {off.extracted!r} ({off.rule}) vs lmms-eval {lmm.extracted!r} ({lmm.rule})")


def explain_logged(task: str, ours: Verdict, logged: Verdict, version: str) -> str:
    """Why lmms-eval's logged verdict differs from our re-implementation of its rule."""
    if task in ("videomme", "lvbench", "mlvu") and ours.extracted != logged.extracted:
        return (f"lmms-eval {version} extracts with extract_mcq_answer (highest-priority, last letter: "
                f"{logged.extracted!r}); our lmms-eval mode reproduces the earlier rule ({ours.extracted!r}, {ours.rule})")
    if task.startswith("longvideobench"):
        return "random fallback letter drawn differently (seeded per sample here, global RNG in lmms-eval)"
    return f"lmms-eval {version} logged {logged.label}, our lmms-eval mode says {ours.label}"


__all__ = ["KNOWN", "Verdict", "from_fields", "logged_verdict", "explain", "explain_logged"]
