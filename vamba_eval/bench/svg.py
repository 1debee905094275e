"""Line charts as inline SVG (no JS, no fonts to fetch): log-scaled frame axis, linear or log values.

Every piece of text is escaped here (``markupsafe.escape``); the result is ``Markup`` that a Jinja2
template with autoescape can embed as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from markupsafe import Markup, escape

W, H = 520, 340
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 34, 104  # the legend lives under the x axis


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    color: str
    dashed: bool = False  # paper numbers: dashed line, hollow markers
    oom: list[float] = field(default_factory=list)  # frame counts that ran out of memory


def _fmt(v: float) -> str:
    a = abs(v)
    if v == 0:
        return "0"
    if a >= 1e5 or a < 1e-2:
        mant, _, exp = f"{v:.0e}".partition("e")
        return f"{mant}e{int(exp)}"
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.3g}"


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo if hi > lo else (abs(hi) or 1.0)
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


class _Scale:
    def __init__(self, lo: float, hi: float, a: float, b: float, log: bool) -> None:
        self.log, self.a, self.b = log, a, b
        self.lo, self.hi = (math.log10(lo), math.log10(hi)) if log else (lo, hi)
        if self.hi == self.lo:
            self.lo, self.hi = self.lo - 0.5, self.hi + 0.5

    def __call__(self, v: float) -> float:
        v = math.log10(v) if self.log else v
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)


def _y_range(values: list[float], log: bool) -> tuple[float, float, list[float]]:
    if log:
        lo = 10 ** math.floor(math.log10(min(values)))
        hi = 10 ** math.ceil(math.log10(max(values)))
        if hi / lo > 1e7:  # too many decades for labels: every other one
            return lo, hi, [10 ** e for e in range(int(math.log10(lo)), int(math.log10(hi)) + 1, 2)]
        return lo, hi, [10 ** e for e in range(int(math.log10(lo)), int(math.log10(hi)) + 1)]
    ticks = _nice_ticks(0.0, max(values) * 1.08)
    return 0.0, ticks[-1], ticks


def line_chart(title: str, series: list[Series], y_label: str, log_y: bool = False,
               note: Optional[str] = None) -> Markup:
    """One chart: ``series`` over frames (x, log₂ axis). Empty data gives a labelled empty frame."""
    xs = sorted({x for s in series for x, _ in s.points} | {x for s in series for x in s.oom})
    ys = [y for s in series for _, y in s.points if y is not None and (y > 0 or not log_y)]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{W}" height="{H}" '
             f'viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}">',
             f'<text x="{W / 2}" y="18" text-anchor="middle" class="ct">{escape(title)}</text>']
    if not xs or not ys:
        parts.append(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" class="cn">'
                     f'{escape(note or "no data")}</text></svg>')
        return Markup("".join(parts))
    x0, x1 = LEFT, W - RIGHT
    y0, y1 = H - BOTTOM, TOP
    sx = _Scale(min(xs) / 1.25, max(xs) * 1.25, x0, x1, log=True)
    lo, hi, yticks = _y_range(ys, log_y)
    sy = _Scale(lo, hi, y0, y1, log=log_y)
    parts += _axes(xs, yticks, sx, sy, y_label)
    for i, s in enumerate(series):
        parts += _series(s, sx, sy, y1)
    parts += _legend(series)
    if note:
        parts.append(f'<text x="{x0}" y="{H - 6}" class="cn">{escape(note)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _axes(xs: list[float], yticks: list[float], sx: _Scale, sy: _Scale, y_label: str) -> list[str]:
    x0, x1, y0 = LEFT, W - RIGHT, H - BOTTOM
    out = [f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" class="ax"/>',
           f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{TOP}" class="ax"/>']
    for x in xs:
        px = sx(x)
        out.append(f'<line x1="{px:.1f}" y1="{y0}" x2="{px:.1f}" y2="{y0 + 4}" class="ax"/>'
                   f'<text x="{px:.1f}" y="{y0 + 14}" text-anchor="end" class="tk" '
                   f'transform="rotate(-35 {px:.1f} {y0 + 14})">{escape(_fmt(x))}</text>')
    for t in yticks:
        py = sy(t) if (t > 0 or not sy.log) else None
        if py is None or py < TOP - 1 or py > y0 + 1:
            continue
        out.append(f'<line x1="{x0}" y1="{py:.1f}" x2="{x1}" y2="{py:.1f}" class="gr"/>'
                   f'<text x="{x0 - 6}" y="{py + 4:.1f}" text-anchor="end" class="tk">{escape(_fmt(t))}</text>')
    out.append(f'<text x="{(x0 + x1) / 2}" y="{y0 + 40}" text-anchor="middle" class="al">frames</text>')
    out.append(f'<text x="14" y="{(y0 + TOP) / 2}" text-anchor="middle" class="al" '
               f'transform="rotate(-90 14 {(y0 + TOP) / 2})">{escape(y_label)}</text>')
    return out


def _series(s: Series, sx: _Scale, sy: _Scale, top: float) -> list[str]:
    color = escape(s.color)
    pts = sorted((x, y) for x, y in s.points if y is not None and (y > 0 or not sy.log))
    out = []
    if len(pts) > 1:
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        dash = ' stroke-dasharray="5 4"' if s.dashed else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
    fill = "white" if s.dashed else color
    for x, y in pts:
        out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{fill}" stroke="{color}" '
                   f'stroke-width="1.5"><title>{escape(s.label)}: {escape(_fmt(x))} frames, '
                   f'{escape(_fmt(y))}</title></circle>')
    for x in s.oom:
        px, py = sx(x), top + 8
        out.append(f'<g stroke="{color}" stroke-width="2.2"><line x1="{px - 5:.1f}" y1="{py - 5:.1f}" '
                   f'x2="{px + 5:.1f}" y2="{py + 5:.1f}"/><line x1="{px - 5:.1f}" y1="{py + 5:.1f}" '
                   f'x2="{px + 5:.1f}" y2="{py - 5:.1f}"/></g>'
                   f'<text x="{px:.1f}" y="{py + 18:.1f}" text-anchor="middle" class="oom" fill="{color}">OOM'
                   f'<title>{escape(s.label)}: out of memory at {escape(_fmt(x))} frames</title></text>')
    return out


def _legend(series: list[Series]) -> list[str]:
    out, col_w, per_row = [], (W - LEFT) // 2, 2
    for i, s in enumerate(series):
        x = LEFT + (i % per_row) * col_w
        y = H - BOTTOM + 56 + (i // per_row) * 14
        dash = ' stroke-dasharray="5 4"' if s.dashed else ""
        out.append(f'<line x1="{x}" y1="{y - 4}" x2="{x + 18}" y2="{y - 4}" stroke="{escape(s.color)}" '
                   f'stroke-width="2"{dash}/><text x="{x + 23}" y="{y}" class="lg">{escape(s.label)}</text>')
    return out
