"""Multiple-choice questions with known answers, generated from a :class:`VideoScript`.

Every generator is a pure function ``(script, rng) -> Question | None`` (None: the script has
nothing to ask that kind of question about). Options are four distinct strings of which exactly
one is true of the script; the gold option's position is drawn from ``rng``. Scenes are named by
their background colour (unique within a video) or their label (also unique), shapes by colour
and kind (unique within a scene), so every question is unambiguous. All the facts asked about
last at least ~40 % of a scene (≥ 2 s) and are drawn big, so they can be read off a few frames.

Each kind carries its LVBench categories (official names; some kinds count toward two) and its
Video-MME task type (one of the official twelve).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from vamba_eval.synth.world import COLOR_NAMES, DIGITS, SHAPE_KINDS, WORDS, Scene, VideoScript

LETTERS = "ABCD"
LVBENCH_CATEGORIES: tuple[str, ...] = (
    "key information retrieval", "event understanding", "summarization",
    "entity recognition", "reasoning", "temporal grounding",
)
VIDEOMME_TASK_TYPES: tuple[str, ...] = (
    "Temporal Perception", "Spatial Perception", "Attribute Perception", "Action Recognition",
    "Object Recognition", "OCR Problems", "Counting Problem", "Temporal Reasoning",
    "Spatial Reasoning", "Action Reasoning", "Object Reasoning", "Information Synopsis",
)
EVENT_OPTIONS = ("it appears partway through the scene", "it disappears partway through the scene",
                 "it turns {color}", "it stays on screen unchanged")


@dataclass(frozen=True)
class Question:
    """A question, its four options (no letter prefixes), the gold letter and its labels."""

    kind: str
    text: str
    options: tuple[str, ...]
    answer: str
    lvbench_types: tuple[str, ...]
    task_type: str
    span: tuple[int, int]

    @property
    def answer_text(self) -> str:
        return self.options[LETTERS.index(self.answer)]


def format_mmss(seconds: float) -> str:
    """``MM:SS`` (whole seconds, minutes not wrapped)."""
    s = int(round(seconds))
    return f"{s // 60:02d}:{s % 60:02d}"


def format_span(start: float, end: float) -> str:
    """``MM:SS-MM:SS``, the LVBench time_reference format."""
    return f"{format_mmss(start)}-{format_mmss(end)}"


def _pick(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def _mix(rng: np.random.Generator, preferred: Iterable[str], pool: Iterable[str],
         exclude: Iterable[str], k: int = 3) -> list[str]:
    """``k`` distinct distractors: from ``preferred`` first (harder), then ``pool``, never ``exclude``."""
    banned, out = set(exclude), []
    for group in (list(dict.fromkeys(preferred)), list(dict.fromkeys(pool))):
        for i in rng.permutation(len(group)):
            item = group[int(i)]
            if item not in banned and item not in out and len(out) < k:
                out.append(item)
    return out


def _finish(kind: str, text: str, gold: str, distractors: Sequence[str], rng: np.random.Generator,
            span: tuple[int, int]) -> Optional[Question]:
    """Shuffle gold + 3 distractors; None when there are not 3 distinct distractors."""
    options = [gold, *distractors[:3]]
    if len(options) != 4 or len(set(options)) != 4:
        return None
    order = [int(i) for i in rng.permutation(4)]
    shuffled = tuple(options[i] for i in order)
    lvb, task = KIND_LABELS[kind]
    return Question(kind, text, shuffled, LETTERS[order.index(0)], lvb, task, span)


def _label(scene: Scene) -> str:
    return f"the number {scene.text}" if scene.text_is_digit else f"the word {scene.text}"


def _whole(script: VideoScript) -> tuple[int, int]:
    return (0, script.duration_s)


def _span(scene: Scene) -> tuple[int, int]:
    return (scene.start_s, scene.end_s)


def _shape_pairs(scene: Scene) -> set[tuple[str, str]]:
    """Every (colour, kind) shown in ``scene``, recolours included."""
    return {(c, s.kind) for i, s in enumerate(scene.shapes) for c in scene.colors_of(i)}


def _unique_static_shapes(script: VideoScript) -> list[tuple[Scene, int]]:
    """Shapes with no event of their own whose (colour, kind) is shown in no other scene."""
    out = []
    for scene in script.scenes:
        for i, s in enumerate(scene.shapes):
            pair = (s.color, s.kind)
            elsewhere = any(pair in _shape_pairs(o) for o in script.scenes if o is not scene)
            if scene.shape_event(i) is None and not elsewhere:
                out.append((scene, i))
    return out


# ---------------------------------------------------------------- generators


def kir_digit(script: VideoScript, rng: np.random.Generator) -> Optional[Question]:
    scenes = [s for s in script.scenes if s.text_is_digit]
    if not scenes:
        return None
    scene = _pick(rng, scenes)
    text = f"What number is shown on screen while the background is {scene.background}?"
    distractors = _mix(rng, [s.text for s in scenes], DIGITS, {scene.text})
    return _finish("kir_digit", text, scene.text, distractors, rng, _span(scene))


def kir_word(script: VideoScript, rng: np.random.Generator) -> Optional[Question]:
    scenes = [s for s in script.scenes if not s.text_is_digit]
    if not scenes:
        return None
    scene = _pick(rng, scenes)
    text = f"What word is written on screen while the background is {scene.background}?"
    distractors = _mix(rng, [s.text for s in scenes], WORDS, {scene.text})
    return _finish("kir_word", text, scene.text, distractors, rng, _span(scene))


def eu_event(script: VideoScript, rng: np.random.Generator) -> Optional[Question]:
    moving = [(s, i) for s in script.scenes for i in range(len(s.shapes)) if s.shape_event(i)]
    still = [(s, i) for s in script.scenes for i in range(len(s.shapes)) if not s.shape_event(i)]
    if not moving and not still:
        return None
    scene, i = _pick(rng, moving) if moving and (not still or rng.random() < 0.75) else _pick(rng, still)
    shape, ev = scene.shapes[i], scene.shape_event(i)
    if ev is not None and ev.kind == "recolor":
        color = ev.color
    else:
        color = _pick(rng, [c for c in COLOR_NAMES if c not in (shape.color, scene.background)])
    options = [o.format(color=color) for o in EVENT_OPTIONS]
    gold = options[3] if ev is None else options[("appear", "disappear", "recolor").index(ev.kind)]
    text = f"In the scene with the {scene.background} background, what happens to the {shape.name}?"
    return _finish("eu_event", text, gold, [o for o in options if o != gold], rng, _span(scene))


def count_ticks(script: VideoScript, rng: np.random.Generator) -> Optional[Question]:
    scenes = [s for s in script.scenes if s.n_ticks]
    if not scenes:
        return None
    scene = _pick(rng, scenes)
    text = (f"In the scene with the {scene.background} background, how many marks does the counter "
            "under the label show at the end of the scene?")
    gold = str(scene.n_ticks)
    return _finish("count_ticks", text, gold, _mix(rng, [], "012345", {gold}), rng, _span(scene))


def count_shapes(script: VideoScript, rng: np.random.Generator) -> Optional[Question]:
    scenes = [s for s in script.scenes if s.stable_count]
    if not scenes:
        return None
    scene = _pick(rng, scenes)
    text = f"How many shapes are shown in the scene with the {scene.background} background?"
    gold = str(len(scene.shapes))
    return _finish("count_shapes", text, gold, _mix(rng, [], "12345", {gold}), rng, _span(scene))


def sum_count(script: VideoScript, rng: np.random.Generator) -> Optional[Question]:
    text = "How many different background colours does the video show?"
    gold = str(len(script.scenes))
    return _finish("sum_count", text, gold, _mix(rng, [], "12345678", {gold}), rng, _whole(script))


def sum_sequence(script: VideoScript, rng: np.random.Generator) -> Optional[Question]:
    colors = [s.background for s in script.scenes]
    gold = ", ".join(colors)
    unused = [c for c in COLOR_NAMES if c not in colors]
    found: list[str] = []
    for _ in range(200):
        if len(found) == 3:
            break
        seq = list(colors)
        if len(seq) > 1 and rng.random() < 0.5:
            seq = [seq[int(j)] for j in rng.permutation(len(seq))]
        else:
            seq[int(rng.integers(len(seq)))] = _pick(rng, unused)
        cand = ", ".join(seq)
        if cand != gold and cand not in found:
            found.append(cand)
    text = "In which order do the background colours appear in the video?"
    return _finish("sum_sequence", text, gold, found, rng, _whole(script))


def er_shape(script: VideoScript, rng: np.random.Generator) -> Optional[Question]:
    cands = [(s, i) for s in script.scenes for i in range(len(s.shapes))
             if (ev := s.shape_event(i)) is None or ev.kind != "recolor"]
    if not cands:
        return None
    scene, i = _pick(rng, cands)
    shown = _shape_pairs(scene)
    absent = [f"a {c} {k}" for k in SHAPE_KINDS for c in COLOR_NAMES
              if c != scene.background and (c, k) not in shown]
    elsewhere = [f"a {c} {k}" for o in script.scenes for (c, k) in sorted(_shape_pairs(o))]  # sets: hash order
    gold = f"a {scene.shapes[i].name}"
    distractors = _mix(rng, [d for d in elsewhere if d in absent], absent, {gold})
    text = f"Which of these shapes is shown in the scene with the {scene.background} background?"
    return _finish("er_shape", text, gold, distractors, rng, _span(scene))


def er_which_scene(script: VideoScript, rng: np.random.Generator) -> Optional[Question]:
    cands = _unique_static_shapes(script)
    if not cands:
        return None
    scene, i = _pick(rng, cands)
    shape = scene.shapes[i]
    others = [s.background for s in script.scenes]
    distractors = _mix(rng, others, COLOR_NAMES, {scene.background, shape.color})
    text = f"A {shape.name} is shown while the background has which colour?"
    return _finish("er_which_scene", text, scene.background, distractors, rng, _span(scene))


def attr_color(script: VideoScript, rng: np.random.Generator) -> Optional[Question]:
    cands = [(s, i) for s in script.scenes for i in range(len(s.shapes))
             if (ev := s.shape_event(i)) is None or ev.kind != "recolor"]
    if not cands:
        return None
    scene, i = _pick(rng, cands)
    shape = scene.shapes[i]
    siblings = [s.color for s in scene.shapes]
    distractors = _mix(rng, siblings, COLOR_NAMES, {shape.color, scene.background})
    text = f"What colour is the {shape.kind} in the scene that shows {_label(scene)}?"
    return _finish("attr_color", text, shape.color, distractors, rng, _span(scene))


def spatial_right(script: VideoScript, rng: np.random.Generator) -> Optional[Question]:
    scenes = [s for s in script.scenes if len(s.shapes) > 1 and not any(e.shape >= 0 for e in s.events)]
    if not scenes:
        return None
    scene = _pick(rng, scenes)
    names = [f"the {s.name}" for s in scene.shapes]
    absent = [f"the {c} {k}" for k in SHAPE_KINDS for c in COLOR_NAMES
              if c != scene.background and (c, k) not in _shape_pairs(scene)]
    distractors = _mix(rng, names, absent, {names[-1]})
    text = f"In the scene with the {scene.background} background, which shape is furthest to the right?"
    return _finish("spatial_right", text, names[-1], distractors, rng, _span(scene))


def rea_more(script: VideoScript, rng: np.random.Generator) -> Optional[Question]:
    scenes = [s for s in script.scenes if s.stable_count]
    pairs = [(a, b) for a in scenes for b in scenes if a.start_s < b.start_s]
    if not pairs:
        return None
    unequal = [p for p in pairs if len(p[0].shapes) != len(p[1].shapes)]
    a, b = _pick(rng, unequal) if unequal and rng.random() < 0.75 else _pick(rng, pairs)
    if rng.random() < 0.5:
        a, b = b, a
    options = [f"the {a.background} scene", f"the {b.background} scene",
               "both show the same number of shapes", "neither shows any shape"]
    na, nb = len(a.shapes), len(b.shapes)
    gold = options[0] if na > nb else options[1] if nb > na else options[2]
    text = (f"Which scene shows more shapes: the one with the {a.background} background "
            f"or the one with the {b.background} background?")
    span = (min(a.start_s, b.start_s), max(a.end_s, b.end_s))
    return _finish("rea_more", text, gold, [o for o in options if o != gold], rng, span)


def rea_after(script: VideoScript, rng: np.random.Generator) -> Optional[Question]:
    if len(script.scenes) < 2:
        return None
    k = int(rng.integers(len(script.scenes) - 1))
    scene, nxt = script.scenes[k], script.scenes[k + 1]
    others = [s.background for s in script.scenes]
    distractors = _mix(rng, others, COLOR_NAMES, {nxt.background})
    text = f"What is the background colour right after the scene that shows {_label(scene)}?"
    return _finish("rea_after", text, nxt.background, distractors, rng, (scene.start_s, nxt.end_s))


def _span_distractors(script: VideoScript, scene: Scene, rng: np.random.Generator) -> list[str]:
    """Spans that do not overlap ``scene``: other scenes first, then halves of other scenes."""
    others = [s for s in script.scenes if s is not scene]
    whole = [format_span(s.start_s, s.end_s) for s in others]
    halves = [format_span(*h) for s in others
              for h in ((s.start_s, (s.start_s + s.end_s) // 2), ((s.start_s + s.end_s) // 2, s.end_s))]
    return _mix(rng, whole, halves, {format_span(scene.start_s, scene.end_s)})


def tg_scene(script: VideoScript, rng: np.random.Generator) -> Optional[Question]:
    scene = _pick(rng, script.scenes)
    text = f"During which time span is the background {scene.background}?"
    gold = format_span(scene.start_s, scene.end_s)
    return _finish("tg_scene", text, gold, _span_distractors(script, scene, rng), rng, _span(scene))


def tg_shape(script: VideoScript, rng: np.random.Generator) -> Optional[Question]:
    cands = _unique_static_shapes(script)
    if not cands:
        return None
    scene, i = _pick(rng, cands)
    text = f"During which time span is a {scene.shapes[i].name} on screen?"
    gold = format_span(scene.start_s, scene.end_s)
    return _finish("tg_shape", text, gold, _span_distractors(script, scene, rng), rng, _span(scene))


Generator = Callable[[VideoScript, np.random.Generator], Optional[Question]]

#: kind -> (LVBench categories, Video-MME task type)
KIND_LABELS: dict[str, tuple[tuple[str, ...], str]] = {
    "kir_digit": (("key information retrieval",), "OCR Problems"),
    "kir_word": (("key information retrieval",), "OCR Problems"),
    "count_shapes": (("key information retrieval",), "Counting Problem"),
    "eu_event": (("event understanding",), "Action Recognition"),
    "count_ticks": (("event understanding",), "Counting Problem"),
    "sum_count": (("summarization",), "Counting Problem"),
    "sum_sequence": (("summarization",), "Information Synopsis"),
    "er_shape": (("entity recognition",), "Object Recognition"),
    "er_which_scene": (("entity recognition", "key information retrieval"), "Object Recognition"),
    "attr_color": (("entity recognition",), "Attribute Perception"),
    "spatial_right": (("entity recognition",), "Spatial Perception"),
    "rea_more": (("reasoning", "entity recognition"), "Object Reasoning"),
    "rea_after": (("reasoning", "key information retrieval"), "Temporal Reasoning"),
    "tg_scene": (("temporal grounding",), "Temporal Perception"),
    "tg_shape": (("temporal grounding", "entity recognition"), "Temporal Perception"),
}

GENERATORS: dict[str, Generator] = {
    "kir_digit": kir_digit, "kir_word": kir_word, "count_shapes": count_shapes,
    "eu_event": eu_event, "count_ticks": count_ticks, "sum_count": sum_count,
    "sum_sequence": sum_sequence, "er_shape": er_shape, "er_which_scene": er_which_scene,
    "attr_color": attr_color, "spatial_right": spatial_right, "rea_more": rea_more,
    "rea_after": rea_after, "tg_scene": tg_scene, "tg_shape": tg_shape,
}


def make_question(kind: str, script: VideoScript, rng: np.random.Generator) -> Optional[Question]:
    """One question of ``kind`` (a key of ``GENERATORS``), or None if the script has none."""
    return GENERATORS[kind](script, rng)


def pick_questions(script: VideoScript, rng: np.random.Generator, n: int,
                   groups: Sequence[Sequence[str]], rounds: int = 3) -> list[Question]:
    """Up to ``n`` questions with distinct texts: one per group in turn (the first kind of the
    group that applies to the script), cycling over the groups for up to ``rounds`` rounds."""
    out: list[Question] = []
    for _ in range(rounds):
        for group in groups:
            if len(out) == n:
                return out
            for kind in group:
                q = make_question(kind, script, rng)
                if q is not None and all(q.text != o.text for o in out):
                    out.append(q)
                    break
    return out


def _groups(rng: np.random.Generator, labels: Sequence[str], key: Callable[[str], str],
            offset: int) -> list[list[str]]:
    """Kinds grouped by ``key(kind)`` in the order of ``labels`` rotated by ``offset``, shuffled."""
    groups = []
    for j in range(len(labels)):
        label = labels[(j + offset) % len(labels)]
        group = [k for k in KIND_LABELS if key(k) == label]
        groups.append([group[int(i)] for i in rng.permutation(len(group))])
    return [g for g in groups if g]


def lvbench_groups(rng: np.random.Generator, offset: int) -> list[list[str]]:
    """Question kinds by (first) LVBench category, the six categories rotated by ``offset``."""
    return _groups(rng, LVBENCH_CATEGORIES, lambda k: KIND_LABELS[k][0][0], offset)


#: The Video-MME task types the generators cover (10 of the official 12: no Spatial or Action Reasoning).
COVERED_TASK_TYPES: tuple[str, ...] = tuple(t for t in VIDEOMME_TASK_TYPES
                                            if any(tt == t for _, tt in KIND_LABELS.values()))


def videomme_groups(rng: np.random.Generator, offset: int) -> list[list[str]]:
    """Question kinds by Video-MME task type, the covered types rotated by ``offset``."""
    return _groups(rng, COVERED_TASK_TYPES, lambda k: KIND_LABELS[k][1], offset)
