"""bench.jsonl → bench.html: one self-contained page (inline SVG charts, no CDN, no network), and
the short text table the CLI prints.

Rows are read from one or more JSONL files; a point measured twice (same size, GPU, model, variant,
mode, frames) keeps its latest line. Rendering reads nothing but the rows, so
``vamba-eval bench --render bench.jsonl`` rebuilds the page anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from markupsafe import Markup

from vamba_eval.bench.paper import SOURCE, TARGET_GPU, evaluate_targets, paper_points
from vamba_eval.bench.svg import Series, line_chart

TEMPLATE = "bench.html.j2"
REQUIRED = ("model", "variant", "mode", "frames", "status")
MODE_ORDER = ("prefill", "decode", "train")
COLORS = {("vamba", "eager"): "#1f77b4", ("vamba", "compiled"): "#17becf", ("qwen2vl", "sdpa"): "#d62728",
          ("qwen2vl", "paper"): "#ff7f0e"}
PAPER_COLORS = {"vamba": "#1f4e79", "qwen2vl": "#8c1c13"}
SPARE = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
VARIANT_NOTE = {"sdpa": "Qwen2-VL best practice: SDPA, last-token logits, KV cache kept",
                "paper": "Qwen2-VL as the paper ran it: logits for every position (prefill only)",
                "eager": "VAMBA, eager PyTorch", "compiled": "VAMBA, torch.compile of the video path"}


class BenchDataError(ValueError):
    """A bench JSONL file is missing or malformed; the message names the file and line."""


def read_rows(paths: Iterable[Path]) -> list[dict[str, Any]]:
    latest: dict[tuple, dict[str, Any]] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise BenchDataError(f"{path}: not found; pass the bench.jsonl written by `vamba-eval bench --out DIR`")
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise BenchDataError(f"{path}:{i}: not JSON ({err})") from None
            missing = [k for k in REQUIRED if not isinstance(row, dict) or k not in row]
            if missing:
                raise BenchDataError(f"{path}:{i}: not a bench row (missing {', '.join(missing)})")
            key = tuple(str(row.get(k)) for k in ("size", "gpu", "model", "variant", "mode", "frames"))
            latest.pop(key, None)
            latest[key] = row
    return list(latest.values())


# --------------------------------------------------------------------------- charts


def _label(r: dict[str, Any], many_setups: bool) -> str:
    base = f"{r['model']} · {r['variant']}"
    return f"{base} · {r.get('size')} · {r.get('gpu')}" if many_setups else base


def _series(rows: list[dict[str, Any]], value: Any, many: bool) -> list[Series]:
    groups: dict[str, Series] = {}
    for r in sorted(rows, key=lambda r: r["frames"]):
        label = _label(r, many)
        if label not in groups:
            color = COLORS.get((r["model"], r["variant"])) or SPARE[len(groups) % len(SPARE)]
            groups[label] = Series(label, [], color)
        s = groups[label]
        if r["status"] == "oom":
            s.oom.append(float(r["frames"]))
        elif r["status"] == "ok" and value(r) is not None:
            s.points.append((float(r["frames"]), float(value(r))))
    return list(groups.values())


def _paper(models: set[str], mode: str, metric: str, scale: float = 1.0) -> list[Series]:
    out = []
    for model in sorted(models):
        pts, oom = paper_points(model, mode, metric)
        if pts or oom:
            out.append(Series(f"paper: {model} (A800)", [(x, y * scale) for x, y in pts], PAPER_COLORS[model],
                              dashed=True, oom=oom))
    return out


def charts_for(mode: str, rows: list[dict[str, Any]], many: bool) -> list[Markup]:
    """Memory, time and FLOPs (or decode rate) against frames for one mode, paper numbers overlaid."""
    models = {r["model"] for r in rows}
    paper_ok = all(r.get("size") == "7b" for r in rows)  # the paper's numbers are for the 7B models
    no_mem = None if any(r.get("peak_alloc_gb") is not None for r in rows) else "no CUDA memory stats (CPU run)"

    def paper(metric: str) -> list[Series]:
        return _paper(models, mode, metric) if paper_ok else []

    mem = line_chart(f"{mode}: peak allocated memory", _series(rows, lambda r: r.get("peak_alloc_gb"), many)
                     + paper("peak_gb"), "GB", note=no_mem)
    if mode == "decode":
        rate = line_chart("decode: greedy tokens/s after the prefill",
                          _series(rows, lambda r: r.get("decode_tok_per_s"), many), "tokens / s")
        gf = line_chart("decode: analytic GFLOP per token", _series(rows, lambda r: _scaled(r, "flops", 1e-9), many),
                        "GFLOP", log_y=True)
        return [mem, rate, gf]
    unit = "s per step" if mode == "train" else "s per prefill"
    time = line_chart(f"{mode}: time (median of repeats)", _series(rows, lambda r: r.get("time_s"), many)
                      + paper("time_s"), unit, log_y=True)
    tf = line_chart(f"{mode}: analytic TFLOP", _series(rows, lambda r: _scaled(r, "flops", 1e-12), many)
                    + paper("tflops"), "TFLOP", log_y=True)
    return [mem, time, tf]


def _scaled(r: dict[str, Any], key: str, k: float) -> Optional[float]:
    return None if r.get(key) is None else r[key] * k


# --------------------------------------------------------------------------- page


def _environments(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        versions = ", ".join(f"{k} {v}" for k, v in sorted((r.get("versions") or {}).items()))
        env = {"run_id": r.get("run_id"), "gpu": r.get("gpu"), "size": r.get("size"), "dtype": r.get("dtype"),
               "versions": versions, "python": r.get("python"), "date": r.get("date"), "git_sha": r.get("git_sha"),
               "ceiling": r.get("ceiling_tflops"), "resolution": r.get("resolution"),
               "frame_size": r.get("frame_size"), "backend": r.get("backend"), "text_tokens": r.get("text_tokens")}
        key = (env["run_id"], env["gpu"], r["model"])
        if key not in seen:
            seen[key] = {**env, "model": r["model"]}
    return list(seen.values())


def _stream(r: dict[str, Any]) -> str:
    """VAMBA's streaming schedule of a row (frames per piece and per ViT pass, the last piece cut or not)."""
    if r.get("chunk_frames") is None:
        return ""
    text = f"pieces of {r['chunk_frames']} · ViT passes of {r.get('vit_chunk_frames')}"
    return text + (" · last piece cut in halves" if r.get("tail") else "")


def _table_row(r: dict[str, Any]) -> dict[str, Any]:
    ph = r.get("phase_s") or {}
    note = ""
    if r["status"] == "oom":
        note = f"largest that fitted: {r.get('frame_limit') or 'none'} · {r.get('error', '')}"
    elif r["status"] != "ok":
        note = r.get("error", "")
    return {**{k: r.get(k) for k in ("model", "variant", "mode", "frames", "video_tokens", "status", "time_s",
                                     "time_unit", "peak_alloc_gb", "peak_reserved_gb", "achieved_tflops",
                                     "decode_tok_per_s", "size")},
            "tflop": _scaled(r, "flops", 1e-12), "mfu_pct": _scaled(r, "mfu", 100.0), "note": note, "stream": _stream(r),
            "phases": (f"ViT {ph['vit_other_s']:.2f} · SSM {ph['ssm_s']:.2f} · K/V {ph['kv_s']:.2f} · "
                       f"text {ph['text_s']:.2f}") if ph else ""}


def page_context(rows: list[dict[str, Any]], sources: list[str]) -> dict[str, Any]:
    ordered = sorted(rows, key=lambda r: (r.get("size") or "", r["model"], r["variant"],
                                          MODE_ORDER.index(r["mode"]) if r["mode"] in MODE_ORDER else 9, r["frames"]))
    many = len({(r.get("size"), r.get("gpu")) for r in rows}) > 1
    sections = []
    for mode in MODE_ORDER:
        sub = [r for r in ordered if r["mode"] == mode]
        if sub:
            sections.append({"mode": mode, "charts": charts_for(mode, sub, many)})
    gpus = sorted({str(r.get("gpu")) for r in rows if r.get("size") == "7b"})
    off_gpu = [g for g in gpus if TARGET_GPU not in g]
    return {"sections": sections, "targets": evaluate_targets(rows), "rows": [_table_row(r) for r in ordered],
            "envs": _environments(rows), "sources": sources, "paper_source": SOURCE, "variant_notes": VARIANT_NOTE,
            "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"), "off_gpu": off_gpu,
            "has_7b": bool(gpus), "frames_on": frames_on(rows)}


def frames_on(rows: list[dict[str, Any]]) -> dict[str, str]:
    """model → where its input frames were held during the points ("host", "device"; rows before the field: device)."""
    found: dict[str, set[str]] = {}
    for r in rows:
        found.setdefault(r["model"], set()).add(r.get("frames_on") or "device")
    return {m: " and ".join(sorted(v)) for m, v in sorted(found.items())}


def render_html(rows: list[dict[str, Any]], sources: list[str]) -> str:
    from vamba_eval.htmlpage import render_page

    return render_page(TEMPLATE, script_macro="sort_script", **page_context(rows, sources))


def write_html(rows: list[dict[str, Any]], out: Path, sources: list[str]) -> Path:
    from vamba_eval.htmlpage import write_page

    return write_page(out, render_html(rows, sources))


def text_table(rows: list[dict[str, Any]]) -> str:
    """The short table the CLI prints last."""
    head = (f"{'model':>8} {'variant':>8} {'mode':>7} {'frames':>6} {'tokens':>8} {'time s':>9} {'peak GB':>8} "
            f"{'TFLOP':>9} {'MFU%':>5} {'tok/s':>7}")
    lines = [head]
    for r in sorted(rows, key=lambda r: (r["model"], r["variant"], r["mode"], r["frames"])):
        start = f"{r['model']:>8} {r['variant']:>8} {r['mode']:>7} {r['frames']:>6} {r.get('video_tokens') or '':>8}"
        if r["status"] != "ok":
            extra = f"(largest that fitted: {r.get('frame_limit') or 'none'})" if r["status"] == "oom" else ""
            lines.append(f"{start} {r['status'].upper():>9} {extra}")
            continue
        lines.append(f"{start} {r['time_s']:>9.3f} {_f(r.get('peak_alloc_gb'), 8, 1)} "
                     f"{_f(_scaled(r, 'flops', 1e-12), 9, 3)} {_f(_scaled(r, 'mfu', 100.0), 5, 0)} "
                     f"{_f(r.get('decode_tok_per_s'), 7, 1)}")
    return "\n".join(lines)


def _f(v: Optional[float], width: int, digits: int) -> str:
    return f"{'—':>{width}}" if v is None else f"{v:>{width}.{digits}f}"
