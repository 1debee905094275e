"""A deterministic synthetic video world: scene scripts, their sampling and their captions.

A :class:`VideoScript` is a list of :class:`Scene` s laid end to end. Each scene has a saturated
background colour (unique within a video), a big label in the middle of the screen (a digit or a
short upper-case word, unique within a video), one to three big bouncing :class:`Shape` s (unique
kind and unique colour within the scene) and :class:`Event` s at whole-second times: a shape
appears, disappears or changes colour, or a tally counter at the bottom of the screen ticks.

Geometry is resolution-free: a shape's position is a point of the unit square mapped onto the
frame's "stage" (the frame minus a margin and the tally band, see ``render.py``); velocities are
stage units per second and bounce off the stage walls.

Everything is a pure function of a ``numpy.random.Generator``: the same seed gives the same
script, hence the same video and the same questions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

#: Saturated colours that survive yuv420p compression and downscaling to ~56 px.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 25, 25),
    "green": (25, 175, 40),
    "blue": (30, 60, 225),
    "yellow": (245, 225, 20),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "cyan": (20, 215, 225),
    "magenta": (215, 35, 205),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
#: Backgrounds on which text and tally marks are drawn in black (white elsewhere).
LIGHT_COLORS = frozenset({"yellow", "white", "cyan", "green"})
SHAPE_KINDS: tuple[str, ...] = ("circle", "square", "triangle")
DIGITS: tuple[str, ...] = tuple("0123456789")
WORDS: tuple[str, ...] = ("SUN", "CAT", "BOX", "MAP", "CUP", "DOG", "HAT", "KEY")
EVENT_KINDS: tuple[str, ...] = ("appear", "disappear", "recolor", "tick")
MIN_SCENE_S = 5
MAX_SCENES = 6


@dataclass(frozen=True)
class Shape:
    """A big moving shape. ``x``/``y`` in [0, 1] (stage units), ``vx``/``vy`` stage units / s."""

    kind: str
    color: str
    x: float
    y: float
    vx: float
    vy: float

    @property
    def name(self) -> str:
        """E.g. "red circle"."""
        return f"{self.color} {self.kind}"


@dataclass(frozen=True)
class Event:
    """Something that happens at ``time_s`` (absolute seconds, whole numbers).

    ``shape`` indexes the scene's shapes (-1 for a tick); ``color`` is the new colour of a recolor.
    """

    time_s: int
    kind: str
    shape: int = -1
    color: str = ""


@dataclass(frozen=True)
class Scene:
    """One continuous stretch of the video, ``[start_s, end_s)``."""

    start_s: int
    end_s: int
    background: str
    text: str
    shapes: tuple[Shape, ...]
    events: tuple[Event, ...] = ()

    @property
    def duration_s(self) -> int:
        return self.end_s - self.start_s

    @property
    def mid_s(self) -> float:
        return (self.start_s + self.end_s) / 2

    @property
    def text_is_digit(self) -> bool:
        return self.text.isdigit()

    def shape_event(self, index: int) -> Optional[Event]:
        """The (at most one) event that concerns shape ``index``."""
        return next((e for e in self.events if e.shape == index and e.kind != "tick"), None)

    def is_visible(self, index: int, t: float) -> bool:
        """Whether shape ``index`` is on screen at absolute time ``t``."""
        ev = self.shape_event(index)
        if ev is None:
            return True
        if ev.kind == "appear":
            return t >= ev.time_s
        if ev.kind == "disappear":
            return t < ev.time_s
        return True

    def color_at(self, index: int, t: float) -> str:
        """Shape ``index``'s colour at absolute time ``t``."""
        ev = self.shape_event(index)
        if ev is not None and ev.kind == "recolor" and t >= ev.time_s:
            return ev.color
        return self.shapes[index].color

    def colors_of(self, index: int) -> tuple[str, ...]:
        """Every colour shape ``index`` ever has in this scene."""
        ev = self.shape_event(index)
        first = self.shapes[index].color
        return (first, ev.color) if ev is not None and ev.kind == "recolor" else (first,)

    def ticks_at(self, t: float) -> int:
        """How many tally marks are shown at absolute time ``t``."""
        return sum(1 for e in self.events if e.kind == "tick" and t >= e.time_s)

    @property
    def n_ticks(self) -> int:
        return sum(1 for e in self.events if e.kind == "tick")

    @property
    def stable_count(self) -> bool:
        """True when no shape appears or disappears (the shape count is constant)."""
        return all(e.kind in ("tick", "recolor") for e in self.events)

    def position(self, index: int, t: float) -> tuple[float, float]:
        """Shape ``index``'s centre in stage units at absolute time ``t`` (bouncing)."""
        s, dt = self.shapes[index], t - self.start_s
        return _bounce(s.x + s.vx * dt), _bounce(s.y + s.vy * dt)


@dataclass(frozen=True)
class VideoScript:
    """A whole video: scenes laid end to end from 0 to ``duration_s``."""

    duration_s: int
    scenes: tuple[Scene, ...]

    def scene_at(self, t: float) -> Scene:
        """The scene on screen at time ``t`` (the last one for t ≥ duration)."""
        for scene in self.scenes:
            if t < scene.end_s:
                return scene
        return self.scenes[-1]

    def scene_with_background(self, color: str) -> Scene:
        return next(s for s in self.scenes if s.background == color)


def _bounce(u: float) -> float:
    """Reflect ``u`` into [0, 1] (a triangle wave of period 2)."""
    u = math.fmod(abs(u), 2.0)
    return 2.0 - u if u > 1.0 else u


def _scene_bounds(rng: np.random.Generator, duration_s: int, n_scenes: Optional[int]) -> list[int]:
    """Whole-second scene boundaries; every scene lasts ≥ max(5 s, duration / 7)."""
    min_len = max(MIN_SCENE_S, math.ceil(duration_s / 7))
    most = max(1, min(MAX_SCENES, duration_s // min_len))
    n = int(rng.integers(min(2, most), most + 1)) if n_scenes is None else min(n_scenes, most)
    extra = rng.multinomial(duration_s - n * min_len, np.full(n, 1.0 / n))
    lengths = [min_len + int(e) for e in extra]
    return [0] + list(np.cumsum(lengths).astype(int).tolist())


def _random_shapes(rng: np.random.Generator, background: str, max_shapes: int) -> tuple[Shape, ...]:
    """1..max_shapes shapes of distinct kinds and distinct colours, none of the background colour."""
    n = int(rng.integers(1, max_shapes + 1))
    kinds = rng.permutation(len(SHAPE_KINDS))[:n]
    free = [c for c in COLOR_NAMES if c != background]
    colors = rng.permutation(len(free))[:n]
    shapes = []
    for k, c in zip(kinds, colors):
        x, y = rng.uniform(0.0, 1.0, size=2)
        speed = rng.uniform(0.06, 0.16)
        angle = rng.uniform(0.0, 2 * math.pi)
        shapes.append(Shape(SHAPE_KINDS[int(k)], free[int(c)], round(float(x), 3), round(float(y), 3),
                            round(speed * math.cos(angle), 4), round(speed * math.sin(angle), 4)))
    return tuple(shapes)


def _whole_seconds(start: int, length: int, lo: float, hi: float) -> list[int]:
    """Whole seconds in [start + lo·length, start + hi·length]."""
    return list(range(math.ceil(start + lo * length), math.floor(start + hi * length) + 1))


def _random_events(rng: np.random.Generator, start: int, length: int, background: str,
                   shapes: tuple[Shape, ...], event_prob: float) -> tuple[Event, ...]:
    """At most one shape event (in the middle fifth) and 0–4 ticks (in the first half)."""
    events: list[Event] = []
    if rng.random() < event_prob:
        index = int(rng.integers(len(shapes)))
        kind = ("appear", "disappear", "recolor")[int(rng.integers(3))]
        times = _whole_seconds(start, length, 0.4, 0.6)
        time = times[int(rng.integers(len(times)))]
        color = ""
        if kind == "recolor":
            used = {s.color for s in shapes} | {background}
            free = [c for c in COLOR_NAMES if c not in used]
            color = free[int(rng.integers(len(free)))]
        events.append(Event(time, kind, index, color))
    if rng.random() < 0.4:
        slots = _whole_seconds(start, length, 0.1, 0.5)
        n = int(rng.integers(1, min(4, len(slots)) + 1))
        for t in sorted(int(v) for v in rng.choice(slots, size=n, replace=False)):
            events.append(Event(t, "tick"))
    return tuple(sorted(events, key=lambda e: (e.time_s, e.kind)))


def random_script(rng: np.random.Generator, duration_s: int, n_scenes: Optional[int] = None,
                  max_shapes: int = 3, event_prob: float = 0.6, digit_prob: float = 0.7) -> VideoScript:
    """A random script of ``duration_s`` whole seconds (≥ 5), a pure function of ``rng``'s state.

    Backgrounds and labels are distinct across scenes; ``digit_prob`` is the chance a scene's
    label is a digit rather than a word; ``event_prob`` the chance a scene has a shape event.
    """
    if duration_s < MIN_SCENE_S:
        raise ValueError(f"duration_s must be ≥ {MIN_SCENE_S}, got {duration_s}")
    bounds = _scene_bounds(rng, int(duration_s), n_scenes)
    n = len(bounds) - 1
    backgrounds = [COLOR_NAMES[int(i)] for i in rng.permutation(len(COLOR_NAMES))[:n]]
    digits = [DIGITS[int(i)] for i in rng.permutation(len(DIGITS))]
    words = [WORDS[int(i)] for i in rng.permutation(len(WORDS))]
    scenes = []
    for i in range(n):
        text = digits.pop() if rng.random() < digit_prob else words.pop()
        start, length = bounds[i], bounds[i + 1] - bounds[i]
        shapes = _random_shapes(rng, backgrounds[i], max_shapes)
        events = _random_events(rng, start, length, backgrounds[i], shapes, event_prob)
        scenes.append(Scene(start, bounds[i + 1], backgrounds[i], text, shapes, events))
    return VideoScript(int(duration_s), tuple(scenes))


# ---------------------------------------------------------------- captions

def _label_phrase(text: str) -> str:
    return f"the number {text}" if text.isdigit() else f"the word {text}"


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def event_phrase(scene: Scene, event: Event) -> str:
    """One event in plain English, e.g. "the red circle turns green"."""
    if event.kind == "tick":
        return "the counter ticks"
    name = scene.shapes[event.shape].name
    if event.kind == "appear":
        return f"a {name} appears"
    if event.kind == "disappear":
        return f"the {name} disappears"
    return f"the {name} turns {event.color}"


def scene_caption(scene: Scene) -> str:
    """A scene in a small, regular vocabulary (lower case, full stops)."""
    parts = [f"the background is {scene.background} and {_label_phrase(scene.text)} is shown."]
    present = [f"a {s.name}" for i, s in enumerate(scene.shapes)
               if (ev := scene.shape_event(i)) is None or ev.kind != "appear"]
    if present:
        parts.append(f"there is {_join(present)}.")
    for ev in scene.events:
        if ev.kind != "tick":
            parts.append(event_phrase(scene, ev) + ".")
    if scene.n_ticks:
        times = "once" if scene.n_ticks == 1 else f"{scene.n_ticks} times"
        parts.append(f"the counter ticks {times}.")
    return " ".join(parts)


def caption(script: VideoScript) -> str:
    """The whole video: the scene count, then each scene in order."""
    n = len(script.scenes)
    lead = [f"the video has {n} scene{'s' if n != 1 else ''}."]
    for i, scene in enumerate(script.scenes):
        word = "first" if i == 0 else ("finally" if i == n - 1 else "then")
        lead.append(f"{word}, {scene_caption(scene)}")
    return " ".join(lead)
