"""``vamba-eval leaderboard add|show|render|validate``: boards of official-split results.

    add(run_dir, board)        validate a run (vamba_eval.submission) and store it as an entry
    show(board) -> str         a plain-text table (measured entries and reported numbers, marked)
    render(board, out) -> Path a self-contained HTML page: sortable, CIs, links to run reports
    validate(board) -> (problems, notes)

Specs, reference numbers and entries: vamba_eval.leaderboard_spec (files under ``leaderboards/``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from vamba_eval.leaderboard_spec import (
    REPORTED,
    BoardSpec,
    Column,
    Entry,
    EntryScore,
    LeaderboardError,
    boards_root,
    check_board,
    entries_dir,
    load_board,
    load_entries,
    load_references,
)
from vamba_eval.run import store
from vamba_eval.submission import RunCheck, check_run, value_of


class SubmissionRejected(LeaderboardError):
    """A run failed the board's checks; ``problems`` lists every reason."""

    def __init__(self, run_dir: Path, board: str, problems: list[str]) -> None:
        self.problems = problems
        lines = [f"{run_dir}: rejected by board {board} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):"]
        super().__init__("\n".join(lines + [f"  - {p}" for p in problems]))


# --------------------------------------------------------------------------- add


def _entry_id(run_id: str, config_hash: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.\-]+", "_", run_id).strip("._") or "run"
    return f"{safe}-{config_hash[:8]}"


def build_entry(chk: RunCheck, spec: BoardSpec, name: Optional[str]) -> Entry:
    assert chk.results is not None
    model = chk.config.get("model") or {}
    env = chk.config.get("environment") or {}
    datasets = env.get("datasets") or {}
    scores = {}
    for col in chk.columns:
        est = value_of(chk.results.tasks[col.task], col)
        scores[col.key] = EntryScore(value=est.value, ci95=est.ci95, stderr=est.stderr, correct=est.correct, n=est.n)
    sizes: dict[str, list[str]] = {}
    for col in chk.columns:
        seen = sorted({"×".join(map(str, r.frame_size)) for (t, _), r in chk.records.items()
                       if t == col.task and r.frame_size})
        sizes[col.task] = seen
    default_name = model.get("name", "?") + (f" ({Path(str(model['path'])).name})" if model.get("path") else "")
    return Entry(
        entry_id=_entry_id(chk.results.run_id, chk.results.config_hash), board=spec.name, name=name or default_name,
        model={k: model[k] for k in ("name", "path", "params", "untrained", "dtype", "ssm_backend") if k in model},
        run_id=chk.results.run_id, run_dir=str(chk.run_dir.resolve()), config_hash=chk.results.config_hash,
        added=datetime.now(timezone.utc).isoformat(timespec="seconds"), scores=scores,
        frames={c.task: (chk.config.get("frames") or {}).get(c.task, "") for c in chk.columns}, frame_sizes=sizes,
        datasets={c.task: {k: (datasets.get(c.task) or {}).get(k) for k in ("revision", "n_samples", "synthetic")}
                  for c in chk.columns},
        scorer={"vamba-eval": (env.get("packages") or {}).get("vamba-eval"), "git_sha": env.get("git_sha"),
                "scoring": (chk.config.get("config") or {}).get("scoring")},
        synthetic=bool(chk.results.synthetic), notes=list(chk.notes))


def add(run_dir: Path, board: str, name: Optional[str] = None, root: Optional[Path] = None) -> Entry:
    """Validate ``run_dir`` against ``board`` and store it; raises SubmissionRejected listing every problem."""
    spec = load_board(board, root)
    chk = check_run(Path(run_dir), spec)
    if chk.problems:
        raise SubmissionRejected(Path(run_dir), board, chk.problems)
    entry = build_entry(chk, spec, name)
    folder = entries_dir(board, root)
    folder.mkdir(parents=True, exist_ok=True)
    store.write_json(folder / f"{entry.entry_id}.json", entry.model_dump(mode="json"))
    return entry


def validate(board: str, root: Optional[Path] = None) -> tuple[list[str], list[str]]:
    return check_board(board, root)


# --------------------------------------------------------------------------- table rows


@dataclass
class Cell:
    value: Optional[float] = None
    ci: Optional[list[float]] = None
    n: Optional[int] = None
    note: str = ""
    source: str = ""


@dataclass
class Row:
    name: str
    kind: str  # "measured" | "reported"
    size: str = ""
    cells: dict[str, Cell] = field(default_factory=dict)
    source: str = ""
    report: Optional[Path] = None  # the run's report.html
    entry: Optional[Entry] = None


def _params(n: Any) -> str:
    if not isinstance(n, (int, float)) or n <= 0:
        return ""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def rows(board: str, root: Optional[Path] = None) -> tuple[BoardSpec, list[Row]]:
    """Measured entries and reported numbers, sorted by the board's sort column (missing last)."""
    spec = load_board(board, root)
    out: list[Row] = []
    for e in load_entries(board, root):
        cells = {k: Cell(s.value, s.ci95, s.n) for k, s in e.scores.items()}
        report = Path(e.run_dir) / store.REPORT
        out.append(Row(e.name, "measured", _params(e.model.get("params")), cells,
                       f"run {e.run_id} ({e.config_hash})", report if report.is_file() else None, e))
    for ref in load_references(spec, root):
        for r in ref.entries:
            cells = {k: Cell(v, note=r.notes.get(k, ""), source=ref.source_of(k)) for k, v in r.scores.items()}
            out.append(Row(r.model, "reported", r.size or "", cells, f"{REPORTED} — {ref.source}"))
    col = spec.sort_column
    sign = -1.0 if col.higher_is_better else 1.0

    def key(row: Row) -> tuple:
        v = row.cells.get(col.key, Cell()).value
        return (v is None, sign * (v or 0.0), row.kind != "measured", row.name)

    return spec, sorted(out, key=key)


def _cell_text(c: Optional[Cell], kind: str) -> str:
    if c is None or c.value is None:
        return "—"
    text = f"{c.value:.1f}"
    if kind == "reported":
        return text + "†" + ("*" if c.note else "")
    if c.ci:
        text += f" [{c.ci[0]:.1f}, {c.ci[1]:.1f}]"
    return text


def show(board: str, root: Optional[Path] = None) -> str:
    """The board as a plain-text table; † = reported, not re-run; * = see the note."""
    spec, table = rows(board, root)
    cols = spec.columns
    head = ["#", "model", "size", "kind"] + [c.display + ("" if c.higher_is_better else " ↓") for c in cols]
    body = [[str(i + 1), r.name, r.size or "—", r.kind] + [_cell_text(r.cells.get(c.key), r.kind) for c in cols]
            for i, r in enumerate(table)]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(x.ljust(w) for x, w in zip(cells, widths)).rstrip()  # noqa: E731
    groups = "  ".join(" " * w for w in widths[:4]) + "  " + "  ".join(
        g.name.ljust(sum(widths[4 + spec.columns.index(g.columns[0]) + i] for i in range(len(g.columns)))
                     + 2 * (len(g.columns) - 1)) for g in spec.groups)
    out = [spec.title, groups.rstrip(), line(head), line(["-" * w for w in widths])] + [line(b) for b in body]
    out += ["", f"sorted by {spec.sort_column.display}; measured cells: value [95% CI, clustered by video]; "
            f"† {REPORTED} (source in the HTML page); * see the source's note"]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- HTML


def _col_view(c: Column) -> dict[str, Any]:
    return {"key": c.key, "display": c.display, "split": c.split, "metric": c.metric, "main": c.main,
            "higher_is_better": c.higher_is_better, "task": c.task}


def render(board: str, out: Optional[Path] = None, root: Optional[Path] = None) -> Path:
    """Write the board as a self-contained, sortable HTML page (default ./leaderboard-<board>.html)."""
    from vamba_eval.htmlpage import relative_href, render_page, write_page

    spec, table = rows(board, root)
    out = Path(out) if out is not None else Path(f"leaderboard-{board}.html")
    views = []
    for r in table:
        views.append({"row": r, "href": relative_href(r.report, out) if r.report else None,
                      "frames": ", ".join(f"{t}: {s}" for t, s in (r.entry.frames if r.entry else {}).items())})
    html = render_page("leaderboard.html.j2", script_macro="sort_script", spec=spec,
                       groups=[{"name": g.name, "title": g.title or g.name, "columns": [_col_view(c) for c in g.columns]}
                               for g in spec.groups],
                       columns=[_col_view(c) for c in spec.columns], rows=views, reported=REPORTED,
                       generated=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return write_page(out, html)


def entries_json(board: str, root: Optional[Path] = None) -> str:
    """Machine-readable board (for scripts): columns and rows."""
    spec, table = rows(board, root)
    data = {"board": spec.name, "columns": [c.key for c in spec.columns],
            "rows": [{"name": r.name, "kind": r.kind, "size": r.size, "source": r.source,
                      "scores": {k: c.value for k, c in r.cells.items()}} for r in table]}
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


__all__ = ["add", "show", "render", "validate", "rows", "SubmissionRejected", "LeaderboardError", "boards_root"]
