"""The ablation spec (``vamba-eval ablate SPEC.yaml``), validated at load; errors name the key.

    name: paper-tiny                 # folder-safe name
    preset: gpu                      # base training recipe (vamba_eval.train.recipe.preset); default: gpu on
                                     # CUDA, cpu otherwise
    set: {stage1.max_seconds: 12}    # overrides applied to every recipe cell (recipe keys, dotted)
    data: ../build/train/data        # cached training data (built there when missing; default OUT/data)
    seeds: [0, 1, 2]
    tasks: [lvbench, videomme, mvbench]   # evaluated on each task's demo split (or eval.data_dir)
    eval: {dtype: float32}           # extra run-config keys for every evaluation (vamba-eval run's keys)
    reference: D                     # the cell every other cell is compared with (paired, same samples)
    axes: {variant: "variant", distill_lambda: "λ"}   # axis name → label; a recipe key, or a free name
    teachers: {0: /ckpt/teacher-s0}  # optional: an existing teacher checkpoint per seed (else trained once
                                     # per seed and shared by every cell of that seed)
    paper_results: paper_results.csv # the paper's numbers (table,model,size,benchmark,score,note)
    cells:
      - name: D
        recipe: {variant: D}         # a training recipe: preset + set + these overrides, per seed
        paper: [{table: ablation_t2, row: "D: CA init from SA / Mamba-2"}]
      - name: teacher
        teacher: true                # the seed's teacher itself (the Qwen2-VL baseline), no more training
      - name: bundled
        checkpoint: /ckpt/vamba-tiny # an existing checkpoint folder, evaluated once
        model: vamba
        at: {variant: D}

Relative paths are relative to the spec file's folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.=+\-]*$"
RUNNER_KEYS = ("tasks", "model", "model_path", "output", "resume", "device")  # set per cell by the runner
STAGES = ("stage1", "stage2")
BENCHMARKS = {"LVBench": "lvbench", "Video-MME": "videomme", "MVBench": "mvbench", "MLVU": "mlvu",
              "LongVideoBench": "longvideobench", "G-VEval": "gveval", "HourVideo": None}


class SpecError(ValueError):
    """The spec is unusable; the message names the file and the key."""


class PaperRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    table: str = Field(min_length=1)  # the CSV's ``table`` column, e.g. ablation_t2
    row: str = Field(min_length=1)  # the CSV's ``model`` column, e.g. "D: CA init from SA / Mamba-2"


class Cell(BaseModel):
    """One column of the matrix: a training recipe, the seed's teacher, or an existing checkpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=NAME, max_length=64)
    label: str = ""
    recipe: Optional[dict[str, Any]] = None  # recipe overrides (keys as in --set), on top of preset + set
    teacher: bool = False
    checkpoint: Optional[str] = None
    model: Literal["vamba", "qwen2vl"] = "vamba"  # checkpoint cells only
    eval_stage: Literal["stage1", "stage2"] = "stage2"  # recipe cells: which checkpoint is evaluated
    seeds: Optional[list[int]] = None  # default: the spec's seeds
    at: dict[str, Any] = Field(default_factory=dict)  # axis coordinates (recipe cells: read from the recipe)
    paper: list[PaperRow] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_source(self) -> "Cell":
        given = [k for k, v in (("recipe", self.recipe is not None), ("teacher", self.teacher),
                                ("checkpoint", self.checkpoint is not None)) if v]
        if len(given) != 1:
            raise ValueError(f"cell {self.name!r}: give exactly one of recipe (a mapping, {{}} for the base recipe), "
                             f"teacher: true, or checkpoint: FOLDER (got {', '.join(given) or 'none'})")
        if self.recipe and "seed" in self.recipe:
            raise ValueError(f"cell {self.name!r}: recipe.seed: seeds come from `seeds:` (the spec's, or the "
                             "cell's own `seeds: [N]`), not from the recipe")
        if self.model != "vamba" and self.checkpoint is None:
            raise ValueError(f"cell {self.name!r}: model: applies to checkpoint cells only")
        return self

    @property
    def kind(self) -> str:
        return "recipe" if self.recipe is not None else ("teacher" if self.teacher else "checkpoint")

    @property
    def display(self) -> str:
        return self.label or self.name


class AblationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=NAME, max_length=64)
    title: str = ""
    description: str = ""
    preset: Optional[Literal["gpu", "cpu", "test"]] = None
    set: dict[str, Any] = Field(default_factory=dict)
    data: Optional[str] = None
    data_tasks: Optional[list[str]] = None  # tasks the training data is built from (default: all demo tasks)
    data_workers: Optional[int] = Field(None, ge=1)  # processes for building the data (no effect on its content)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    tasks: list[str] = Field(min_length=1)
    eval: dict[str, Any] = Field(default_factory=dict)
    reference: str
    axes: dict[str, str] = Field(default_factory=dict)
    teachers: dict[int, str] = Field(default_factory=dict)
    paper_results: Optional[str] = None
    cells: list[Cell] = Field(min_length=1)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct (got {v})")
        return v

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, v: list[str]) -> list[str]:
        from vamba_eval.registry import get_task

        for name in v:
            try:
                get_task(name)
            except KeyError as err:  # UnknownNameError, with a did-you-mean
                raise ValueError(str(err)) from None
        return v

    @field_validator("eval")
    @classmethod
    def _eval_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        from vamba_eval.run.config import RunConfig

        owned = sorted(set(v) & set(RUNNER_KEYS))
        if owned:
            raise ValueError(f"{', '.join(owned)}: set by the ablation runner per cell; remove from eval:")
        unknown = sorted(set(v) - set(RunConfig.model_fields))
        if unknown:
            raise ValueError(f"unknown run-config key(s) {', '.join(unknown)} (see `vamba-eval run --help`)")
        try:
            RunConfig.model_validate({"tasks": ["lvbench"], **v})
        except ValidationError as err:
            raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())) from None
        return v

    @model_validator(mode="after")
    def _cells(self) -> "AblationSpec":
        names = [c.name for c in self.cells]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"cells: duplicate cell name(s) {', '.join(dup)}")
        if self.reference not in names:
            raise ValueError(f"reference: {self.reference!r} is not a cell (cells: {', '.join(names)})")
        for c in self.cells:
            extra = sorted(set(c.at) - set(self.axes))
            if extra:
                raise ValueError(f"cell {c.name!r}: at: {', '.join(extra)} not among axes ({', '.join(self.axes)})")
        return self

    def cell(self, name: str) -> Cell:
        for c in self.cells:
            if c.name == name:
                return c
        raise KeyError(name)

    def seeds_of(self, cell: Cell) -> list[int]:
        """Seeds a cell runs with; a checkpoint cell runs once (seed None)."""
        if cell.kind == "checkpoint":
            return [cell.seeds[0] if cell.seeds else self.seeds[0]]
        return list(cell.seeds or self.seeds)


# --------------------------------------------------------------------------- loading


def _loc(err: dict[str, Any], raw: dict[str, Any]) -> str:
    """``cells.1.recipe`` → ``cells[B].recipe`` (the cell's name, not its index)."""
    parts = [str(p) for p in err["loc"]]
    if len(parts) >= 2 and parts[0] == "cells" and parts[1].isdigit():
        cells = raw.get("cells") or []
        i = int(parts[1])
        name = cells[i].get("name") if i < len(cells) and isinstance(cells[i], dict) else None
        parts = [f"cells[{name or i}]"] + parts[2:]
    return ".".join(parts) or "(root)"


def _explain(err: ValidationError, source: str, raw: dict[str, Any]) -> str:
    lines = [f"{source}: invalid ablation spec"]
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  - {_loc(e, raw)}: {msg}")
    lines.append("See the keys in vamba_eval/ablate/spec.py (or ablations/paper.yaml for an example).")
    return "\n".join(lines)


def load_spec(path: Path) -> tuple[AblationSpec, Path]:
    """The validated spec and the folder its relative paths are resolved against."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise SpecError(f"{path}: cannot read ({err})") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: must be a mapping (name:, tasks:, seeds:, reference:, cells: …)")
    try:
        spec = AblationSpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(_explain(err, str(path), raw)) from None
    base = path.resolve().parent
    check_recipes(spec, str(path))
    check_paper_rows(spec, base, str(path))
    return spec, base


def resolve(base: Path, value: Optional[str]) -> Optional[Path]:
    if value is None:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


# --------------------------------------------------------------------------- recipes


def override_items(overrides: dict[str, Any]) -> list[str]:
    """A mapping of recipe keys → ``key=value`` strings for ``apply_overrides`` (values JSON-encoded)."""
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]


def base_preset(spec: AblationSpec, device: str) -> str:
    return spec.preset or ("gpu" if str(device).startswith("cuda") else "cpu")


def cell_recipe(spec: AblationSpec, cell: Optional[Cell], seed: int, device: str = "cpu") -> Any:
    """The ``vamba_eval.train`` Recipe of a recipe cell (or of the teacher, ``cell=None``) for one seed."""
    from vamba_eval.train.recipe import apply_overrides, preset

    r = preset(base_preset(spec, device))
    r = apply_overrides(r, override_items(spec.set))
    if cell is not None and cell.recipe:
        r = apply_overrides(r, override_items(cell.recipe))
    r.seed = int(seed)
    return r


def check_recipes(spec: AblationSpec, source: str) -> None:
    """Every override names a recipe field with a valid value (errors name the cell and the key)."""
    from vamba_eval.models.vamba.convert import VARIANTS
    from vamba_eval.train.recipe import apply_overrides, preset

    def bad(where: str, msg: str) -> SpecError:
        return SpecError(f"{source}: invalid ablation spec\n  - {where}: {msg}")

    sections = [("set", spec.set)] + [(f"cells[{c.name}].recipe", c.recipe or {}) for c in spec.cells
                                      if c.kind == "recipe"]
    for where, overrides in sections:
        r = preset(base_preset(spec, "cpu"))
        if where != "set":
            r = apply_overrides(r, override_items(spec.set))
        for key, value in overrides.items():
            try:
                apply_overrides(r, override_items({key: value}))
            except (ValueError, AttributeError, TypeError) as err:
                msg = str(err)
                if "': " in msg and msg.startswith("--set"):
                    msg = msg.split("': ", 1)[1]
                raise bad(f"{where}.{key}", msg or type(err).__name__) from None
        if r.variant not in VARIANTS:
            raise bad(f"{where}.variant", f"{r.variant!r} is not one of {', '.join(VARIANTS)} "
                      "(vamba_eval.models.vamba.convert.VARIANTS)")
        if r.distill_lambda < 0:
            raise bad(f"{where}.distill_lambda", "must be >= 0")


STUDENT_ONLY = ("variant", "distill_lambda", "distill_topk", "stage1", "stage2", "export_dtype")


def digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def recipe_identity(recipe: Any) -> dict[str, Any]:
    """The recipe as it decides a result: ``data.workers`` (processes building the cache, machine-dependent)
    left out."""
    rec = recipe.to_dict()
    rec["data"] = {k: v for k, v in rec["data"].items() if k != "workers"}
    return rec


def teacher_key(recipe: Any) -> str:
    """What the teacher depends on: the recipe without the student-only fields (seed, data, model, teacher…)."""
    return digest({k: v for k, v in recipe_identity(recipe).items() if k not in STUDENT_ONLY})


def axis_value(cell: Cell, axis: str, recipe: Any = None) -> Any:
    """A cell's coordinate on ``axis``: ``at`` first, else the recipe field of that name."""
    if axis in cell.at:
        return cell.at[axis]
    if recipe is None:
        return None
    target = recipe
    for part in axis.split("."):
        if not hasattr(target, part):
            return None
        target = getattr(target, part)
    return target


# --------------------------------------------------------------------------- paper reference rows


def read_paper_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a paper_results.csv; each group's note carried down to the rows of the same (table, benchmark)."""
    rows: list[dict[str, Any]] = []
    notes: dict[tuple[str, str], str] = {}
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(line for line in fh if not line.startswith("#")):
            key = (row["table"], row["benchmark"])
            if row.get("note"):
                notes.setdefault(key, row["note"])
            rows.append({"table": row["table"], "model": row["model"], "size": row.get("size") or "",
                         "benchmark": row["benchmark"], "task": BENCHMARKS.get(row["benchmark"]),
                         "score": float(row["score"]), "text": row["score"].strip(), "note": row.get("note") or "",
                         "group_note": notes.get(key, "")})
    for row in rows:
        row["group_note"] = notes.get((row["table"], row["benchmark"]), "")
    return rows


def check_paper_rows(spec: AblationSpec, base: Path, source: str) -> None:
    wanted = [(c.name, p) for c in spec.cells for p in c.paper]
    if not wanted:
        return
    if spec.paper_results is None:
        raise SpecError(f"{source}: invalid ablation spec\n  - paper_results: cells map to paper rows; name the CSV "
                        "of the paper's numbers (e.g. paper_results: paper_results.csv)")
    path = resolve(base, spec.paper_results)
    if not path.is_file():
        raise SpecError(f"{source}: invalid ablation spec\n  - paper_results: {path} not found")
    rows = read_paper_csv(path)
    have = {(r["table"], r["model"]) for r in rows}
    for name, p in wanted:
        if (p.table, p.row) not in have:
            close = sorted(m for t, m in have if t == p.table)
            raise SpecError(f"{source}: invalid ablation spec\n  - cells[{name}].paper: no row {p.row!r} in table "
                            f"{p.table!r} of {path} (rows: {', '.join(close) or 'none; tables: ' + ', '.join(sorted({t for t, _ in have}))})")
