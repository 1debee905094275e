"""RUN_DIR/{config.json, results.json, samples.jsonl, thumbs/} → one self-contained RUN_DIR/report.html.

Offline: CSS, SVG, images (data URIs) and one filter script are inline; a CSP blocks every network
load and allows only that script (by hash). Safe: everything is autoescaped (only our CSS/script are
``Markup``); secret-named config values are redacted, key-like strings scrubbed from every rendered
value, and a final check refuses to write a page still holding one. Env vars are never read.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import jinja2
from markupsafe import Markup
from pydantic import ValidationError

from vamba_eval.run.thumbs import thumb_path
from vamba_eval.records import SCHEMA_VERSION, Estimate, ResultsRecord, SampleRecord, TaskResult

TEMPLATE = "run_report.html.j2"
MACROS = "macros.html.j2"
CSS = "report.css"
SECRET_NAME = re.compile(r"key|token|secret|password", re.IGNORECASE)
KEY_LIKE = re.compile(r"(?<![A-Za-z0-9_\-])(?:sk-[A-Za-z0-9_\-]{16,}|hf_[A-Za-z0-9]{30,}|AKIA[0-9A-Z]{16})")
REDACTED = "[redacted]"
URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/?#\s@\"'<>]+@")  # scheme://user:password@
URL_SECRET_PARAM = re.compile(r"(?i)([?&;][^=&#\s\"'<>]*(?:key|token|secret|passw|pwd|sig|auth|credential)"
                              r"[^=&#\s\"'<>]*=)[^&#\s\"'<>]+")  # ?api-key=…, &token=…
ENV_VAR_KEYS = frozenset({"env", "environ", "env_vars", "environment_variables"})
THUMB_MAX_BYTES = 512 * 1024
FAILURES_PER_TYPE = 200
PAGE_NAME = re.compile(r"samples-\d+\.html")
GENERATOR = '<meta name="generator" content="vamba-eval report">'
UNTRAINED = "untrained: random weights — scores are chance level by construction"
BUNDLED = ("the bundled tiny checkpoint: trained for minutes on the synthetic video world (vamba_eval.synth) — "
           "a check that the pipeline works end to end; it has never seen real video")


@dataclass
class RunData:
    config: dict[str, Any]
    results: Optional[ResultsRecord]
    samples: list[SampleRecord]
    notes: list[str] = field(default_factory=list)


def redact(value: Any, key: str = "") -> Any:
    """Copy of a config value with secret-named keys redacted and env-var blocks dropped.

    Numbers/bools under secret-like names (``max_new_tokens``) are kept: they cannot be credentials.
    """
    if key and SECRET_NAME.search(key) and value is not None and not isinstance(value, (bool, int, float)):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items() if str(k).lower() not in ENV_VAR_KEYS}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def scrub_text(text: str) -> str:
    """``text`` without API-key-like strings and without credentials in URLs (user info, key/token/
    password query parameters)."""
    text = KEY_LIKE.sub(REDACTED, text)
    text = URL_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
    return URL_SECRET_PARAM.sub(lambda m: m.group(1) + REDACTED, text)


def _scrub(value: Any) -> Any:
    """Jinja ``finalize`` hook: every rendered expression passes through here before escaping."""
    if isinstance(value, str):
        return (Markup if isinstance(value, Markup) else str)(scrub_text(str(value)))
    return value


def check_no_secrets(html: str, where: Path) -> None:
    """Last line of defence: refuse to write a page containing anything API-key-like."""
    if KEY_LIKE.search(html):  # never echo the match itself
        raise ValueError(f"{where}: rendered page contains an API-key-like string; refusing to write it")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found — is {path.parent} a vamba-eval run directory?") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc}); re-run `vamba-eval score` to rewrite it") from None


def read_samples(path: Path) -> tuple[list[SampleRecord], list[str]]:
    """Parse samples.jsonl; skip a torn last line; keep the FIRST complete line per (task, sample_id),
    the same rule as ``run.store.load_records`` (so the report shows what results.json counted)."""
    if not path.exists():
        return [], [f"{path.name} not found: no per-sample data in this report"]
    # split on "\n" only: str.splitlines() would also break a record at a U+2028/U+2029/\x85 … that a
    # model output (written raw, ensure_ascii=False) may contain
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records: dict[tuple[str, str], SampleRecord] = {}
    notes: list[str] = []
    duplicates = 0
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = SampleRecord.model_validate_json(line)
        except ValidationError as exc:
            if i == last:
                notes.append(f"{path.name}: last line (line {i + 1}) is incomplete or invalid — skipped "
                             "(a run killed mid-write leaves a torn line; `--resume` redoes that sample)")
                continue
            first = exc.errors()[0].get("msg", "invalid record")
            raise ValueError(f"{path}:{i + 1}: not a valid sample record ({first}); fix or delete that line") from None
        duplicates += (rec.task, rec.sample_id) in records
        records.setdefault((rec.task, rec.sample_id), rec)
    if duplicates:
        notes.append(f"{path.name}: {duplicates} repeated sample line(s) (retries / at-least-once delivery); "
                     "the first complete line of each sample is shown (as results.json counts it)")
    return list(records.values()), notes


def load_run(run_dir: Path) -> RunData:
    config = _read_json(run_dir / "config.json")
    if not isinstance(config, dict):
        raise ValueError(f"{run_dir / 'config.json'}: expected a JSON object")
    samples, notes = read_samples(run_dir / "samples.jsonl")
    results: Optional[ResultsRecord] = None
    path = run_dir / "results.json"
    if path.exists():
        try:
            results = ResultsRecord.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as exc:
            raise ValueError(f"{path}: not a valid results record ({exc.errors()[0].get('msg')}); "
                             "re-run `vamba-eval score` to rewrite it") from None
        if results.schema_version != SCHEMA_VERSION:
            notes.append(f"results.json schema version {results.schema_version} ≠ {SCHEMA_VERSION} of this report")
    else:
        notes.append("results.json not found — scores below are missing; run `vamba-eval score RUN_DIR`")
    return RunData(config=config, results=results, samples=samples, notes=notes)


def _dur(seconds: Optional[float]) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m {sec:02d}s"


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    return "—" if value is None or value == "" else str(value)


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return default
        obj = obj[part]
    return obj


def _sample_total(timings: dict[str, float]) -> float:
    return timings.get("total", sum(v for k, v in timings.items() if k != "total"))


def _chart(rows: list[dict[str, Any]], width: int = 440, label_w: int = 150, row_h: int = 22) -> dict[str, Any]:
    """Geometry of a horizontal bar chart (0–100 %) with 95 % CI whiskers; drawn by a macro."""
    plot_w = width - label_w - 56
    scale = lambda v: round(label_w + plot_w * max(0.0, min(100.0, v)) / 100, 1)  # noqa: E731
    bars = [{"row": row, "y": 7 + i * row_h, "h": row_h - 6, "mid": 4 + (i + 0.5) * row_h,
             "w": None if row["value"] is None else round(scale(row["value"]) - label_w, 1),
             "ci": row["ci"] and (scale(row["ci"][0]), scale(row["ci"][1]))} for i, row in enumerate(rows)]
    axis_y = 4 + len(rows) * row_h
    return {"width": width, "height": axis_y + 18, "axis_y": axis_y, "bars": bars, "x0": label_w,
            "ticks": [{"x": scale(t), "label": str(t)} for t in (0, 25, 50, 75, 100)], "value_x": width - 48}


def _estimate_row(label: str, est: Estimate, unit: str = "%") -> dict[str, Any]:
    ci = est.ci95 if est.ci95 and len(est.ci95) == 2 else None
    return {"label": label, "value": est.value, "value_s": "—" if est.value is None else f"{est.value:.1f}{unit}",
            "ci": ci, "ci_s": "—" if ci is None else f"{ci[0]:.1f} – {ci[1]:.1f}", "n": est.n, "correct": est.correct,
            "n_clusters": est.n_clusters, "stderr_s": "—" if est.stderr is None else f"±{est.stderr:.2f}"}


def _unit(tr: TaskResult) -> str:
    """Accuracies are percentages; graded metrics (judge scores) are plain numbers."""
    return "%" if tr.metric == "accuracy" else ""


def _task_view(name: str, tr: TaskResult, dataset: dict[str, Any]) -> dict[str, Any]:
    breakdowns = []
    for axis, cats in tr.breakdowns.items():
        rows = [_estimate_row(label, est, _unit(tr)) for label, est in cats.items()]
        breakdowns.append({"axis": axis, "rows": rows, "chart": _chart(rows)})
    return {"name": name, "title": tr.title or name, "metric": tr.metric, "scoring": tr.scoring,
            "overall": _estimate_row(name, tr.overall, _unit(tr)), "n": tr.n, "n_scored": tr.n_scored,
            "n_failed": tr.n_failed, "n_unparsed": tr.n_unparsed, "flags": dict(tr.n_flagged),
            "notes": list(tr.notes), "breakdowns": breakdowns, "dataset": redact(dataset) if dataset else {}}


def _banners(data: RunData) -> list[dict[str, str]]:
    datasets = _get(data.config, "environment", "datasets", default={}) or {}
    banners = []
    for task, info in sorted(datasets.items()):
        if isinstance(info, dict) and info.get("synthetic"):
            notice = info.get("notice") or "synthetic demo data — not the real benchmark"
            banners.append({"kind": "synthetic", "title": f"SYNTHETIC DATA · {task}", "text": str(notice)})
    if data.results is not None and data.results.synthetic and not banners:
        banners.append({"kind": "synthetic", "title": "SYNTHETIC DATA",
                        "text": "this run used synthetic demo data — scores say nothing about the real benchmark"})
    model = data.config.get("model") if isinstance(data.config.get("model"), dict) else {}
    if model.get("untrained"):
        banners.append({"kind": "untrained", "title": f"UNTRAINED MODEL · {model.get('name', '?')}", "text": UNTRAINED})
    elif model.get("bundled"):
        banners.append({"kind": "bundled", "title": f"BUNDLED TINY MODEL · {model.get('name', '?')}", "text": BUNDLED})
    return banners


def _timing_rows(data: RunData) -> list[tuple[str, str]]:
    sums: dict[str, list[float]] = defaultdict(list)
    for s in data.samples:
        for k, v in s.timings.items():
            sums[k].append(v)
    totals = [_sample_total(s.timings) for s in data.samples if s.timings]
    wall = _get(data.config, "timings", default=None)  # run-level wall clock, when the runner records it
    rows = [(f"run {k}", _dur(v) if isinstance(v, (int, float)) else _plain(v))
            for k, v in (wall.items() if isinstance(wall, dict) else [])]
    rows.append(("time, sum over samples", _dur(sum(totals)) if totals else "not recorded"))
    rows.append(("time, mean per sample", _dur(sum(totals) / len(totals)) if totals else "not recorded"))
    return rows + [(f"{k} time", f"{_dur(sum(v))} total · {_dur(sum(v) / len(v))} mean")
                   for k, v in sorted(sums.items()) if k != "total"]


def _summary_rows(data: RunData, run_dir: Path) -> list[tuple[str, str]]:
    cfg, conf = data.config, data.config.get("config") or {}
    env = cfg.get("environment") or {}
    model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {"name": cfg.get("model")}
    res = data.results
    scoring = conf.get("scoring") or conf.get("scoring_mode") or (
        sorted({t.scoring for t in res.tasks.values()}) if res else None)
    frames_used = Counter(len(s.frame_indices) for s in data.samples if s.frame_indices)
    sizes = Counter("×".join(map(str, s.frame_size)) for s in data.samples if s.frame_size)
    rows = [
        ("run id", res.run_id if res else conf.get("run_id") or run_dir.name),
        ("model", " — ".join(str(x) for x in (model.get("name") or conf.get("model"), model.get("description")) if x)),
        ("tasks", _plain(conf.get("tasks") or (list(res.tasks) if res else None))),
        ("config hash", _plain(cfg.get("config_hash") or (res.config_hash if res else None))),
        ("git sha", _plain(env.get("git_sha"))), ("device", _plain(env.get("device"))),
        ("SSM backend", _plain(env.get("ssm_backend"))),
        ("frames (config)", _plain(redact(conf.get("frames", conf.get("num_frames"))))),
        ("frames per sample (seen)", _plain([f"{k} ×{v}" for k, v in frames_used.most_common(3)])),
        ("frame size fed to model", _plain([f"{k} ×{v}" for k, v in sizes.most_common(3)])),
        ("scoring mode", _plain(scoring)), ("samples in samples.jsonl", str(len(data.samples))),
    ]
    return rows + _timing_rows(data)


def _consistency_notes(data: RunData) -> list[str]:
    res, cfg_hash, notes = data.results, data.config.get("config_hash"), []
    if res and cfg_hash and res.config_hash != cfg_hash:
        notes.append(f"config hash mismatch: config.json has {cfg_hash}, results.json has {res.config_hash} — "
                     "results may come from a different configuration")
    extra = sorted({s.task for s in data.samples} - set(res.tasks)) if res else []
    if extra:
        notes.append(f"samples.jsonl has tasks missing from results.json: {', '.join(extra)}")
    return notes


def _thumb(thumbs: Optional[Path], s: SampleRecord) -> Optional[str]:
    """thumbs/<task>/<sample id>.jpg (``run.thumbs.thumb_path``) as a data URI; None if absent, too big, not a JPEG or outside thumbs/."""
    try:
        path = thumb_path(thumbs, s.task, s.sample_id).resolve()
        path.relative_to(thumbs)
        if not path.is_file() or path.stat().st_size > THUMB_MAX_BYTES:
            return None
        data = path.read_bytes()
    except (OSError, ValueError):
        return None
    if not data.startswith(b"\xff\xd8"):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def _sample_view(s: SampleRecord, thumbs: Optional[Path]) -> dict[str, Any]:
    """The record itself plus what the template cannot cheaply derive (status, total time, thumbnail)."""
    status = "failed" if s.error is not None else {True: "correct", False: "wrong", None: "excluded"}[s.correct]
    return {"rec": s, "task": s.task, "status": status, "thumb": _thumb(thumbs, s) if thumbs else None,
            "mark": {"correct": "✓", "wrong": "✗", "failed": "!", "excluded": "–"}[status],
            "total": _sample_total(s.timings) if s.timings else None}


def _failures(samples: list[SampleRecord]) -> list[dict[str, Any]]:
    groups: dict[str, list[SampleRecord]] = defaultdict(list)
    for s in samples:
        if s.error is not None:
            groups[s.error.type].append(s)
    return [{"type": etype, "count": len(items), "more": max(0, len(items) - FAILURES_PER_TYPE),
             "items": items[:FAILURES_PER_TYPE]}
            for etype, items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))]


def _split_inline(views: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], Optional[str]]:
    """All samples when they fit; else failed/wrong/excluded ones (capped) and a note saying so."""
    if len(views) <= limit:
        return views, None
    keep = [v for v in views if v["status"] != "correct"]
    note = (f"{len(views)} samples exceed the inline limit of {limit}: this page lists only the "
            f"{min(len(keep), limit)} failed, wrong or excluded ones")
    if len(keep) > limit:
        note += f" (first {limit} of {len(keep)})"
    return keep[:limit], note + ". Every sample is in the samples-N.html pages linked below."


def template_root(name: str = TEMPLATE) -> Any:
    """Installed package data first (``vamba_eval.report_templates``), then the source tree's reports/."""
    local = Path(__file__).resolve().parent.parent / "reports"
    try:
        candidates = [resources.files("vamba_eval.report_templates"), local]
    except (ModuleNotFoundError, TypeError):
        candidates = [local]
    for root in candidates:
        if root.joinpath(name).is_file():
            return root
    raise FileNotFoundError(f"template {name} not found (package vamba_eval.report_templates or {local}); "
                            "reinstall vamba-eval")


def _environment() -> tuple[jinja2.Environment, Markup, Markup, str]:
    root = template_root()

    def load(name: str) -> Optional[str]:
        entry = root.joinpath(name)
        return entry.read_text(encoding="utf-8") if entry.is_file() else None

    env = jinja2.Environment(loader=jinja2.FunctionLoader(load), autoescape=True, finalize=_scrub,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["dur"] = _dur
    css = Markup(load(CSS) or "")  # our own file, not user data
    script = Markup(str(env.get_template(MACROS).module.filter_script()).strip())  # type: ignore[attr-defined]
    digest = base64.b64encode(hashlib.sha256(str(script).encode("utf-8")).digest()).decode("ascii")
    return env, css, script, f"sha256-{digest}"


def write_html(path: Path, html: str) -> None:
    """Refuse a page holding a key-like string; write it whole or not at all (a full disk: a clear error)."""
    from vamba_eval.run.store import disk_full_error, is_disk_full

    check_no_secrets(html, path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(html, encoding="utf-8")
        tmp.replace(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if is_disk_full(err):
            raise disk_full_error(path, "the HTML page", err, then="The run's data files are intact: free some "
                                  "disk space and render the page again (`vamba-eval report RUN_DIR`).") from None
        raise



def _write_pages(env: jinja2.Environment, base: dict[str, Any], views: list[dict[str, Any]],
                 out_dir: Path, page_size: int) -> list[dict[str, Any]]:
    for old in out_dir.glob("samples-*.html"):  # stale pages of an earlier render (ours only: marker check)
        if PAGE_NAME.fullmatch(old.name) and GENERATOR in old.read_text(encoding="utf-8", errors="replace")[:600]:
            old.unlink()
    if not views:
        return []
    chunks = [views[i:i + page_size] for i in range(0, len(views), page_size)]
    pages = [{"href": f"samples-{i + 1}.html", "label": f"{i * page_size + 1}–{i * page_size + len(c)}"}
             for i, c in enumerate(chunks)]
    template = env.get_template(TEMPLATE)
    for i, chunk in enumerate(chunks):
        html = template.render(**base, page_mode=True, page_index=i, pages=pages, samples=chunk,
                               samples_note=f"samples {pages[i]['label']} of {len(views)}")
        write_html(out_dir / pages[i]["href"], html)
    return pages


def _context(data: RunData, run_dir: Path, views: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything the main page and the samples pages share."""
    datasets = _get(data.config, "environment", "datasets", default={})
    datasets = datasets if isinstance(datasets, dict) else {}
    res = data.results
    tasks = [_task_view(n, t, datasets.get(n) or {}) for n, t in res.tasks.items()] if res else []
    summary = _summary_rows(data, run_dir)
    return {"run_id": summary[0][1], "summary": summary, "banners": _banners(data), "tasks": tasks,
            "notes": data.notes + _consistency_notes(data), "overview_chart": _chart([t["overall"] for t in tasks]),
            "sample_tasks": sorted({v["task"] for v in views})}


def render_run_report(run_dir: Path, out: Optional[Path] = None, max_samples_inline: int = 2000) -> Path:
    """Render RUN_DIR's config.json, results.json and samples.jsonl to RUN_DIR/report.html (or ``out``).

    Returns the page's path. Raises FileNotFoundError / ValueError naming the file when the run
    directory is unreadable, and ValueError if the page would contain an API-key-like string.
    """
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    data = load_run(run_dir)
    env, css, script, script_hash = _environment()
    thumbs = (run_dir / "thumbs").resolve() if (run_dir / "thumbs").is_dir() else None
    views = [_sample_view(s, thumbs) for s in data.samples]
    inline, overflow_note = _split_inline(views, max(0, max_samples_inline))
    base = {**_context(data, run_dir, views), "css": css, "script": script, "script_hash": script_hash,
            "report_href": out.name}
    pages = _write_pages(env, base, views if overflow_note else [], out.parent, max(1, max_samples_inline))
    packages = _get(data.config, "environment", "packages", default={})
    html = env.get_template(TEMPLATE).render(
        **base, page_mode=False, page_index=None, pages=pages, samples=inline, samples_note=overflow_note,
        failures=_failures(data.samples), packages=redact(packages) if isinstance(packages, dict) else {},
        config_json=json.dumps(redact(data.config.get("config", {})), indent=2, ensure_ascii=False, default=str))
    write_html(out, html)
    return out
