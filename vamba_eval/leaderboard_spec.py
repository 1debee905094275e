"""Leaderboard specs (``leaderboards/<name>.yaml``), published reference numbers, and stored entries.

A board is a list of column GROUPS ("hour-long", "medium/short"); a column names the vamba-eval
task that fills it (or ``task: null`` for a benchmark we only have published numbers for), the
metric and the value read from the task result (``overall`` or ``<axis>/<label>``), the official
split in words and its size (``n_samples``), the direction (``higher_is_better``) and whether it is
its group's ``main`` column. ``references`` point at YAML files of published numbers, each entry
marked ``status: reported, not re-run``. Accepted submissions are JSON files under
``<root>/entries/<board>/``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vamba_eval.errors import explain_validation

REPORTED = "reported, not re-run"
KEY = r"^[a-z0-9][a-z0-9_\-]*$"
BOARD_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


class LeaderboardError(ValueError):
    """A board spec, reference file or entry is unusable; the message names the file and the key."""


class Column(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str = Field(pattern=KEY)
    task: Optional[str]  # None: reference numbers only (no vamba-eval task)
    display: str = Field(min_length=1)
    metric: str = "accuracy"  # must equal the task result's ``metric``
    value: str = "overall"  # "overall" or "<breakdown axis>/<label>"
    split: str = Field(min_length=1)  # the official split, in words
    n_samples: Optional[int] = Field(None, ge=1)  # size of the official split (a submission must match)
    higher_is_better: bool = True
    main: bool = False
    require_config: dict[str, Any] = Field(default_factory=dict)  # run config keys that must have these values
    dataset_revisions: Optional[list[str]] = None  # accepted release revisions; None = any recorded one
    description: str = ""

    @field_validator("value")
    @classmethod
    def _selector(cls, v: str) -> str:
        if v != "overall" and (v.count("/") != 1 or not all(v.split("/"))):
            raise ValueError("must be 'overall' or '<breakdown axis>/<label>'")
        return v

    @model_validator(mode="after")
    def _task_columns_need_size(self) -> "Column":
        if self.task is not None and self.n_samples is None:
            raise ValueError(f"column {self.key}: a column filled by a task needs n_samples (the official split size)")
        return self


class Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    title: str = ""
    columns: list[Column] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_main(self) -> "Group":
        if sum(c.main for c in self.columns) > 1:
            raise ValueError(f"group {self.name}: at most one column may be main")
        return self

    @property
    def main(self) -> Column:
        return next((c for c in self.columns if c.main), self.columns[0])


class BoardSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=KEY)
    title: str = Field(min_length=1)
    description: str = ""
    scoring: Literal["official", "lmms-eval"] = "official"
    allow_synthetic: bool = False  # test boards only: accept runs on the synthetic demo data
    max_failed: int = Field(0, ge=0)  # failed samples tolerated per task
    sort_by: Optional[str] = None  # a column key; default: the first group's main column
    references: list[str] = Field(default_factory=list)  # reference files, relative to the board's folder
    groups: list[Group] = Field(min_length=1)

    @model_validator(mode="after")
    def _keys(self) -> "BoardSpec":
        keys = [c.key for c in self.columns]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"duplicate column key(s): {', '.join(dup)}")
        tasks = [c.task for c in self.columns if c.task]
        dup = sorted({t for t in tasks if tasks.count(t) > 1 and self._same_value(t)})
        if dup:
            raise ValueError(f"task(s) {', '.join(dup)} fill two columns with the same value selector")
        if self.sort_by is not None and self.sort_by not in keys:
            raise ValueError(f"sort_by {self.sort_by!r} is not a column key (known: {', '.join(keys)})")
        return self

    def _same_value(self, task: str) -> bool:
        values = [c.value for c in self.columns if c.task == task]
        return len(values) != len(set(values))

    @property
    def columns(self) -> list[Column]:
        return [c for g in self.groups for c in g.columns]

    @property
    def sort_column(self) -> Column:
        return next(c for c in self.columns if c.key == (self.sort_by or self.groups[0].main.key))


class ReferenceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(min_length=1)
    size: Optional[str] = None
    status: Literal["reported, not re-run"]
    scores: dict[str, float] = Field(min_length=1)
    notes: dict[str, str] = Field(default_factory=dict)

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return None if v is None else str(v)


class ReferenceFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str = Field(min_length=1)
    source_file: Optional[str] = None
    tables: dict[str, list[str]] = Field(default_factory=dict)  # table name → column keys it reports
    entries: list[ReferenceEntry] = Field(min_length=1)

    def source_of(self, key: str) -> str:
        table = next((name for name, keys in self.tables.items() if key in keys), None)
        return f"{self.source}, {table}" if table else self.source


class EntryScore(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    value: Optional[float]
    ci95: Optional[list[float]] = None
    stderr: Optional[float] = None
    correct: Optional[int] = None
    n: int


class Entry(BaseModel):
    """An accepted submission (``entries/<board>/<entry_id>.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["measured"] = "measured"
    entry_id: str
    board: str
    name: str
    model: dict[str, Any] = Field(default_factory=dict)
    run_id: str
    run_dir: str
    config_hash: str
    added: str
    scores: dict[str, EntryScore]
    frames: dict[str, str] = Field(default_factory=dict)
    frame_sizes: dict[str, list[str]] = Field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = Field(default_factory=dict)
    scorer: dict[str, Any] = Field(default_factory=dict)
    synthetic: bool = False
    notes: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------- files


def boards_root(root: Optional[Path] = None) -> Path:
    """``root``, else $VAMBA_EVAL_LEADERBOARDS, else the source tree's ``leaderboards/``."""
    if root is not None:
        path = Path(root).expanduser()
    elif os.environ.get("VAMBA_EVAL_LEADERBOARDS"):
        path = Path(os.environ["VAMBA_EVAL_LEADERBOARDS"]).expanduser()
    else:
        path = Path(__file__).resolve().parent.parent / "leaderboards"
    if not path.is_dir():
        raise LeaderboardError(f"{path}: leaderboards folder not found; pass --leaderboards-dir (a checkout's "
                               "leaderboards/ folder) or set VAMBA_EVAL_LEADERBOARDS")
    return path


def board_names(root: Path) -> list[str]:
    return sorted(p.stem for p in Path(root).glob("*.yaml") if BOARD_NAME.match(p.stem))


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise LeaderboardError(f"{path}: cannot read ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise LeaderboardError(f"{path}: not valid YAML ({err})") from None


def load_board(name: str, root: Optional[Path] = None) -> BoardSpec:
    root = boards_root(root)
    path = root / f"{name}.yaml"
    if not path.is_file():
        from vamba_eval.registry import did_you_mean

        raise LeaderboardError(str(did_you_mean("board", name, board_names(root))) + f" (boards live in {root})")
    try:
        spec = BoardSpec.model_validate(_read_yaml(path))
    except ValidationError as err:
        raise LeaderboardError(explain_validation(err, str(path), "leaderboard spec",
                                                  "See leaderboards/README.md for the keys.", show_input=True)) from None
    if spec.name != name:
        raise LeaderboardError(f"{path}: name {spec.name!r} must equal the file name {name!r}")
    return spec


def load_references(spec: BoardSpec, root: Optional[Path] = None) -> list[ReferenceFile]:
    root = boards_root(root)
    out = []
    for rel in spec.references:
        path = root / rel
        try:
            out.append(ReferenceFile.model_validate(_read_yaml(path)))
        except ValidationError as err:
            raise LeaderboardError(explain_validation(err, str(path), "reference file",
                                                      f"Each entry needs model, status: {REPORTED}, scores.",
                                                      show_input=True)) from None
    return out


def check_board(name: str, root: Optional[Path] = None) -> tuple[list[str], list[str]]:
    """(problems, notes) of a board beyond its schema: references match columns; tasks exist."""
    from vamba_eval.registry import task_names

    try:
        spec = load_board(name, root)
        refs = load_references(spec, root)
    except LeaderboardError as err:
        return [str(err)], []
    keys = {c.key for c in spec.columns}
    problems, notes = [], []
    for ref, rel in zip(refs, spec.references):
        for table, cols in ref.tables.items():
            problems += [f"{rel}: table {table!r} names unknown column {k!r}" for k in cols if k not in keys]
        for e in ref.entries:
            problems += [f"{rel}: {e.model}: score for unknown column {k!r}" for k in e.scores if k not in keys]
            problems += [f"{rel}: {e.model}: note for a column without a score: {k!r}" for k in e.notes
                         if k not in e.scores]
        models = [(e.model, e.size) for e in ref.entries]
        problems += [f"{rel}: {m[0]} ({m[1]}) listed twice" for m in sorted(set(models)) if models.count(m) > 1]
    known = set(task_names())
    for c in spec.columns:
        if c.task and c.task not in known:
            notes.append(f"column {c.key}: task {c.task!r} is not installed yet (tasks/{c.task}.py); "
                         "no submission can fill it")
    return problems, notes


def entries_dir(board: str, root: Optional[Path] = None) -> Path:
    return boards_root(root) / "entries" / board


def load_entries(board: str, root: Optional[Path] = None) -> list[Entry]:
    folder = entries_dir(board, root)
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append(Entry.model_validate(json.loads(path.read_text(encoding="utf-8"))))
        except (ValueError, ValidationError) as err:
            raise LeaderboardError(f"{path}: not a valid leaderboard entry ({str(err).splitlines()[0]}); "
                                   "fix or delete the file") from None
    return out
