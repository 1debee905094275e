"""G-VEval judge prompts: our own paraphrases (default) or the authors' files from a user folder.

The G-VEval authors' prompt text is NOT shipped here. Our paraphrases keep the interface the
scorer relies on — the placeholders ``{{Reference}}`` and ``{{Caption}}``, the score wrapped in
"$" (ACCR: α β ψ δ) — and every record says which text was used.

``--judge-prompts DIR`` loads the authors' files instead; DIR mirrors their
``evaluation/gveval/prompts`` folder (optionally under ``DIR/gveval/``)::

    vid/ref-free.txt   vid/ref-only.txt   vid/combined.txt
    vid/accr/ref-free.txt  vid/accr/ref-only.txt  vid/accr/combined.txt
    img/ref-free.txt   img/ref-only.txt   img/combined.txt

A folder that lacks the needed file is an error (never a silent fall-back to the paraphrase).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

from vamba_eval.task_api import DataError

PARAPHRASE_VERSION = "vamba-eval paraphrase v1 (not the G-VEval authors' text)"
SETTING_FILES = {"reference-free": "ref-free", "reference-only": "ref-only", "combined": "combined"}

_SUBJECT = {
    "vid": ("a video", "You also get ONE picture made of three frames taken from the video, placed side by "
                       "side and labelled Frame 1, Frame 2 and Frame 3. They sample key moments; they are "
                       "not the whole video."),
    "img": ("an image", "The image is attached."),
}
_BASIS = {
    "ref-free": "Judge the caption against what {visual}. No reference captions are given.",
    "ref-only": "Judge the caption against the reference captions, which people wrote for the same {medium}.",
    "combined": "Judge the caption against both what {visual} and the reference captions, "
                "which people wrote for the same {medium}.",
}
_STANDARD = (
    "Rate the caption with ONE integer from 0 (worthless) to 100 (ideal): how well it picks out the "
    "important content. Lower the score for wrong statements, for important content it leaves out, and "
    "for repeated, padded or off-topic text."
)
_DIMENSIONS = (
    "Rate the caption on four dimensions, each with an integer from 0 (worthless) to 100 (ideal):\n"
    "- Accuracy: are the things and actions it mentions really there, with nothing invented?\n"
    "- Completeness: does it cover the significant events, including movement and scene changes?\n"
    "- Conciseness: is it clear and to the point, without padding or repetition?\n"
    "- Relevance: does it stay on the content, without unrelated remarks or questions?"
)
_STANDARD_FORMAT = (
    "First explain your judgement in a few sentences. Then end with exactly this sentence, N being your "
    "integer score written between two dollar signs:\nThe final score is $N$."
)
_ACCR_FORMAT = (
    "First explain your judgement in a few sentences. Then end with these four sentences, each N being "
    "the integer score of that dimension written between two copies of its Greek letter:\n"
    "Accuracy: αNα.\nCompleteness: βNβ.\nConciseness: ψNψ.\nRelevance: δNδ."
)


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt with ``{{Reference}}`` / ``{{Caption}}`` placeholders and where it came from."""

    text: str
    source: str  # "paraphrase:vid/ref-free.txt (…)" or "file:<path>"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]

    def fill(self, references: str, caption: str) -> str:
        """The authors' order: ``{{Reference}}`` first, then ``{{Caption}}``."""
        return self.text.replace("{{Reference}}", references).replace("{{Caption}}", caption)


def relative_file(visual: str, setting: str, accr: bool) -> str:
    """The authors' ``select_prompt`` path: vid[/accr]/<setting>.txt or img/<setting>.txt."""
    name = SETTING_FILES[setting]
    if visual == "vid":
        return f"vid/accr/{name}.txt" if accr else f"vid/{name}.txt"
    return f"img/{name}.txt"


def paraphrase(visual: str, setting: str, accr: bool) -> str:
    """Our default prompt text for (visual ∈ vid|img, setting, ACCR)."""
    name = SETTING_FILES[setting]
    medium, attached = _SUBJECT[visual]
    visual_word = "the three frames show" if visual == "vid" else "the image shows"
    parts = [f"You are grading a caption that was written for {medium}."]
    if name != "ref-only":
        parts.append(attached)
    parts.append(_BASIS[name].format(visual=visual_word, medium=medium.split()[-1]))
    parts.append(_DIMENSIONS if accr else _STANDARD)
    if name != "ref-free":
        parts.append("Reference captions:\n{{Reference}}")
    parts.append("Caption to grade:\n{{Caption}}")
    parts.append(_ACCR_FORMAT if accr else _STANDARD_FORMAT)
    return "\n\n".join(parts)


@lru_cache(maxsize=64)
def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the judge prompt ({err}). Fix the file or drop --judge-prompts.") from None


def load_template(visual: str, setting: str, accr: bool, prompts_dir: Optional[str]) -> PromptTemplate:
    """The authors' file from ``prompts_dir`` when given (DIR/gveval/<rel> or DIR/<rel>), else our paraphrase."""
    rel = relative_file(visual, setting, accr)
    if not prompts_dir:
        return PromptTemplate(paraphrase(visual, setting, accr), f"paraphrase:{rel} ({PARAPHRASE_VERSION})")
    root = Path(prompts_dir).expanduser()
    for candidate in (root / "gveval" / rel, root / rel):
        if candidate.is_file():
            return PromptTemplate(_read(str(candidate)), f"file:{candidate}")
    raise DataError(f"{root}: no G-VEval prompt {rel} (looked in {root / 'gveval'} and {root}). Copy the "
                    "authors' evaluation/gveval/prompts folder there, or drop --judge-prompts to use the "
                    "built-in paraphrases.")
