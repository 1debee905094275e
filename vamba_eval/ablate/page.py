"""``ablation.html`` (+ ``ablation.json``): a matrix per task with metric ± 95 % CI, the paired delta to
the reference cell, seeds as mean ± sd, and the paper's 7B numbers for mapped cells, side by side and
labelled as reported, not re-run. Self-contained, autoescaped (``vamba_eval.htmlpage``)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from vamba_eval.ablate.results import (TABLE_TITLES, Row, chance_level, load_units, paper_rows, task_rows)
from vamba_eval.ablate.spec import AblationSpec
from vamba_eval.ablate.state import read_events
from vamba_eval.htmlpage import fmt_num, relative_href, render_page, write_page
from vamba_eval.run import store

PAGE = "ablation.html"
TEMPLATE = "ablation.html.j2"
PAPER_LABEL = "7B results reported in the paper, not re-run"
HONESTY = ("What this is: the paper's recipe and ablation axes (cross-attention init × Mamba vs Mamba-2 × "
           "distillation λ) run in miniature — same recipe, same axes, but synthetic data and small models "
           "trained for minutes. It is a sanity check of the pipeline and at most a hint of trends, NOT a "
           "reproduction of the paper's numbers. The paper columns are the 7B results reported in the paper, "
           "shown for orientation only; they were not re-run and are not comparable in scale.")


def fmt_p(p: Optional[float]) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_axis(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _row_view(row: Row, page: Path, reference: str) -> dict[str, Any]:
    est = row.pooled
    ci = est.ci95 if est is not None else None
    d = row.delta
    return {
        "cell": row.cell.name, "label": row.cell.display, "kind": row.cell.kind, "reference": row.cell.name == reference,
        "axes": {k: fmt_axis(v) for k, v in row.axes.items()}, "status": row.status,
        "seeds": [{"seed": s, "value": fmt_num(v), "href": relative_href(row.run_dirs[s] / store.REPORT, page)
                   if (row.run_dirs[s] / store.REPORT).is_file() else None} for s, v in sorted(row.seeds.items())],
        "mean_sd": "—" if row.mean is None else (fmt_num(row.mean) + (f" ± {row.sd:.1f}" if row.sd is not None else "")),
        "pooled": fmt_num(est.value) if est is not None else "—",
        "ci": f"{ci[0]:.1f} – {ci[1]:.1f}" if ci else "—",
        "n": est.n if est is not None else 0,
        "delta": fmt_num(d.delta, 1, True) if d else ("ref" if row.cell.name == reference else "—"),
        "delta_ci": f"{d.ci95[0]:+.1f} – {d.ci95[1]:+.1f}" if d and d.ci95 else "—",
        "bc": f"{d.b} / {d.c}" if d else "—", "pairs": d.n if d else 0,
        "p": fmt_p(d.p_value) if d else "—", "p_holm": fmt_p(row.p_holm),
        "significant": bool(row.p_holm is not None and row.p_holm < 0.05),
        "paper": [{"score": p["text"], "table": p["table"], "row": p["row"]} for p in row.paper],
        "raw": {"seeds": row.seeds, "mean": row.mean, "sd": row.sd,
                "pooled": est.model_dump() if est is not None else None,
                "delta": None if d is None else {"delta": d.delta, "ci95": d.ci95, "b": d.b, "c": d.c, "n": d.n,
                                                 "p_value": d.p_value, "p_holm": row.p_holm},
                "paper": row.paper},
    }


def _grid(spec: AblationSpec, rows: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """With exactly two axes: rows × columns of pooled values (cells absent from the spec stay empty)."""
    if len(spec.axes) != 2:
        return None
    a, b = list(spec.axes)
    ra = list(dict.fromkeys(r["axes"][a] for r in rows))
    cb = list(dict.fromkeys(r["axes"][b] for r in rows))
    cells = {(r["axes"][a], r["axes"][b]): r for r in rows}
    return {"row_axis": spec.axes[a], "col_axis": spec.axes[b], "cols": cb,
            "rows": [{"head": x, "cells": [cells.get((x, y)) for y in cb]} for x in ra]}


def _paper_tables(spec: AblationSpec, base: Path, views: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    csv_rows = paper_rows(spec, base)
    mapped = {(p.table, p.row): c.name for c in spec.cells for p in c.paper}
    tables = []
    for table in dict.fromkeys(r["table"] for r in csv_rows if any(t == r["table"] for t, _ in mapped)):
        rows = [r for r in csv_rows if r["table"] == table]
        benches = list(dict.fromkeys(r["benchmark"] for r in rows))
        task_of = {r["benchmark"]: r["task"] for r in rows}
        body = []
        for model in dict.fromkeys(r["model"] for r in rows):
            cell = mapped.get((table, model))
            scores = {r["benchmark"]: r["text"] for r in rows if r["model"] == model}
            ours = {}
            for bench in benches:
                task = task_of[bench]
                view = next((v for v in views.get(task, []) if v["cell"] == cell), None) if task else None
                ours[bench] = (view["pooled"] if view else ("not run" if cell else ""))
            body.append({"model": model, "cell": cell, "paper": {b: scores.get(b, "—") for b in benches},
                         "ours": ours})
        notes = {b: next((r["group_note"] for r in rows if r["benchmark"] == b and r["group_note"]), "") for b in benches}
        tables.append({"table": table, "title": TABLE_TITLES.get(table, table), "benchmarks": benches, "notes": notes,
                       "rows": body, "not_run": [b for b in benches if task_of[b] not in views]})
    return tables


def _training(spec: AblationSpec, out: Path) -> list[dict[str, Any]]:
    rows = []
    for cell in spec.cells:
        if cell.kind != "recipe":
            continue
        per: dict[str, list[dict[str, Any]]] = {}
        for seed in spec.seeds_of(cell):
            path = Path(out) / "cells" / cell.name / f"seed{seed}" / "state.json"
            steps = json.loads(path.read_text(encoding="utf-8")).get("steps", {}) if path.is_file() else {}
            for name, info in steps.items():
                per.setdefault(name, []).append(info)
        summary = {}
        for stage in ("stage1", "stage2"):
            infos = per.get(stage, [])
            if infos:
                summary[stage] = {"steps": "/".join(str(i.get("steps", "?")) for i in infos),
                                  "seconds": "/".join(f"{i.get('seconds', 0):.0f}" for i in infos),
                                  "val": "/".join(fmt_num(100 * i["val_first_token_acc"]) if "val_first_token_acc" in i
                                                  else "—" for i in infos)}
        rows.append({"cell": cell.name, "stages": summary})
    return rows


def _timing(out: Path) -> dict[str, Any]:
    events = read_events(out)
    work = sum(float(e.get("seconds", 0)) for e in events if e.get("event") == "done")
    runs = [e for e in events if e.get("event") == "end" and e.get("part") == "main"]
    return {"compute_s": round(work), "invocations": len(runs), "wall_s": round(sum(float(e.get("seconds", 0)) for e in runs)),
            "parts": [{"seconds": round(float(e.get("seconds", 0))), "code": e.get("code")} for e in runs]}


def build_context(spec: AblationSpec, base: Path, out: Path) -> dict[str, Any]:
    page = Path(out) / PAGE
    done, status = load_units(spec, out)
    tasks, views = [], {}
    from vamba_eval.registry import get_task

    for task in spec.tasks:
        row_objs = task_rows(spec, base, task, done, status)
        rows = [_row_view(r, page, spec.reference) for r in row_objs]
        views[task] = rows
        n = max((r.pooled.n // max(1, len(r.seeds)) for r in row_objs if r.pooled is not None), default=0)
        tasks.append({"task": task, "title": getattr(get_task(task), "title", "") or task,
                      "chance": chance_level(task, done), "n_per_seed": n,
                      "metric": next((r.metric for r in row_objs if r.pooled is not None), "accuracy"),
                      "rows": rows, "grid": _grid(spec, rows)})
    incomplete = [{"cell": c, "seed": s, "status": st} for c, seeds in status.items() for s, st in sorted(seeds.items())
                  if st != "evaluated"]
    return {"spec": spec, "preset": spec.preset or "gpu on CUDA, cpu otherwise", "honesty": HONESTY,
            "paper_label": PAPER_LABEL, "tasks": tasks, "paper_tables": _paper_tables(spec, base, views),
            "training": _training(spec, out), "timing": _timing(out), "incomplete": incomplete,
            "axes": spec.axes, "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "overrides": [f"{k}={v}" for k, v in spec.set.items()], "eval_keys": [f"{k}={v}" for k, v in spec.eval.items()],
            "any_paper": any(c.paper for c in spec.cells)}


def render(spec: AblationSpec, base: Path, out: Path) -> Path:
    """Write ``OUT/ablation.json`` and ``OUT/ablation.html`` from what the directory holds now."""
    out = Path(out)
    ctx = build_context(spec, base, out)
    data = {"name": spec.name, "generated": ctx["generated"], "honesty": HONESTY, "paper_label": PAPER_LABEL,
            "timing": ctx["timing"], "incomplete": ctx["incomplete"],
            "tasks": {t["task"]: {"chance": t["chance"], "metric": t["metric"],
                                  "cells": {r["cell"]: {"axes": r["axes"], **r["raw"]} for r in t["rows"]}}
                      for t in ctx["tasks"]}}
    store.write_json(out / "ablation.json", json.loads(json.dumps(data, default=str)))
    for t in ctx["tasks"]:
        for r in t["rows"]:
            r.pop("raw")
    html = render_page(TEMPLATE, "sort_script", fmt_p=fmt_p, **ctx)
    return write_page(out / PAGE, html)
