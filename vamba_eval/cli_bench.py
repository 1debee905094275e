"""``vamba-eval bench``: the efficiency benchmark (VAMBA vs Qwen2-VL), registered on the main app by
``vamba_eval.cli``::

    from vamba_eval.cli_bench import register
    register(app)

Measures: ``vamba-eval bench --models vamba,qwen2vl --frames 8,64,256,1024 --mode prefill,decode
--size 7b --out DIR`` appends one JSON line per point to DIR/bench.jsonl and renders DIR/bench.html
from all of DIR/bench.jsonl (a point measured again replaces its older line on the page).
Re-renders: ``vamba-eval bench --render a.jsonl,b.jsonl [--out DIR]`` (no model, no GPU).
Exit codes: 0 ok (OOM points are results, not failures); 1 some point failed with an error;
2 bad options or input files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Optional

import typer

if TYPE_CHECKING:
    from vamba_eval.bench.runner import BenchOptions

JSONL, HTML = "bench.jsonl", "bench.html"


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise SystemExit(code)


def _csv(value: str, what: str) -> list[str]:
    items = [x.strip() for x in value.split(",") if x.strip()]
    if not items:
        _fail(f"--{what} is empty")
    return items


def _ints(value: str, what: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in _csv(value, what))
    except ValueError:
        _fail(f"--{what} takes comma-separated integers, got {value!r}")
    if any(x < 1 for x in out):
        _fail(f"--{what} values must be ≥ 1, got {value!r}")
    return out


def _resolution(value: str) -> tuple[int, int]:
    w, sep, h = value.lower().partition("x")
    if not sep or not w.strip().isdigit() or not h.strip().isdigit() or int(w) < 1 or int(h) < 1:
        _fail(f"--resolution takes WIDTHxHEIGHT in pixels (e.g. 640x360), got {value!r}")
    return int(w), int(h)


def render_only(sources: list[Path], out_dir: Optional[Path]) -> Path:
    from vamba_eval.bench.page import BenchDataError, read_rows, text_table, write_html

    try:
        rows = read_rows(sources)
    except BenchDataError as err:
        _fail(str(err))
    if not rows:
        _fail(f"no rows in {', '.join(map(str, sources))}")
    target = (out_dir or sources[0].parent) / HTML
    write_html(rows, target, [s.name for s in sources])
    typer.echo(text_table(rows))
    return target


def bench_cmd(
    models: str = typer.Option("vamba,qwen2vl", "--models", help="Comma list: vamba, qwen2vl."),
    frames: str = typer.Option("8,16,32,64", "--frames", help="Comma list of frame counts (ascending order is used)."),
    mode: str = typer.Option("prefill", "--mode", help="Comma list: prefill, decode, train."),
    resolution: str = typer.Option("640x360", "--resolution", help="Frame size WIDTHxHEIGHT before the official "
                                   "resize to multiples of 28 (640x360 → 644x364)."),
    size: str = typer.Option("7b", "--size", help="7b (the released shapes) | tiny (CPU tests)."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cuda:1, cpu (default: cuda if available)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="bfloat16 | float16 | float32 (default: bf16 on CUDA, "
                                        "fp32 on CPU)."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Timed repeats per point (median reported)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder for bench.jsonl + bench.html "
                                       "(default runs/bench)."),
    backend: str = typer.Option("auto", "--backend", help="VAMBA SSM kernels: auto | torch | fla | mamba_ssm."),
    compile_video: bool = typer.Option(False, "--compile/--no-compile", help="VAMBA: torch.compile the video path."),
    text_tokens: int = typer.Option(60, "--text-tokens", min=4, help="Prompt tokens around the video."),
    decode_tokens: int = typer.Option(32, "--decode-tokens", min=2, help="Greedy tokens per decode point."),
    paper_baseline: bool = typer.Option(True, "--paper-baseline/--no-paper-baseline",
                                        help="Also time Qwen2-VL prefill with logits for every position (the paper's setup)."),
    budget_s: Optional[float] = typer.Option(None, "--budget-s", help="Start no new point after this many seconds "
                                             "(for wall-clock-limited machines); later points are recorded as skipped."),
    point_budget_s: float = typer.Option(30.0, "--point-budget-s", help="Stop repeating a point after this many seconds."),
    chunk_frames: Optional[int] = typer.Option(None, "--chunk-frames", min=1, help="VAMBA: frames per streamed "
                                               "piece (default: 32 below 512 frames, the last one cut into two of 16, "
                                               "64 from 512; a set size streams whole pieces; smaller saves memory, "
                                               "costs time). Rows record the piece used and the cut."),
    frames_on: str = typer.Option("host", "--frames-on", help="Input frames: host (pinned, copied to the GPU inside "
                                  "the timed region as `vamba-eval run` feeds each model: VAMBA a streamed piece at "
                                  "a time, Qwen2-VL all at once) | device (on the GPU beforehand, counted in the "
                                  "peak: the accounting of rows before 2026-11-25 afternoon). Rows record it."),
    render: Optional[str] = typer.Option(None, "--render", help="Only re-render the page from these JSONL files "
                                         "(comma list); writes bench.html into --out or beside the first file."),
) -> None:
    """Efficiency benchmark: time, peak memory, analytic FLOPs and MFU per model × mode × frame count."""
    if render:
        typer.echo(str(render_only([Path(p) for p in _csv(render, "render")], out)))
        return
    opts = _options(models, frames, mode, resolution, size, device, dtype, repeats, backend, compile_video,
                    text_tokens, decode_tokens, paper_baseline, budget_s, point_budget_s, chunk_frames,
                    frames_on)
    folder = out or Path("runs") / "bench"
    rows = _run(opts, folder / JSONL)
    render_only([folder / JSONL], folder)
    typer.echo(f"{folder / JSONL}\n{folder / HTML}")
    if any(r["status"] == "error" for r in rows):
        raise SystemExit(1)


def _options(models: str, frames: str, mode: str, resolution: str, size: str, device: Optional[str],
             dtype: Optional[str], repeats: int, backend: str, compile_video: bool, text_tokens: int,
             decode_tokens: int, paper_baseline: bool, budget_s: Optional[float], point_budget_s: float,
             chunk_frames: Optional[int] = None, frames_on: str = "host") -> "BenchOptions":
    import torch

    from vamba_eval.bench.runner import FRAMES_ON, MODELS, MODES, SIZES, BenchOptions

    names, modes = _csv(models, "models"), _csv(mode, "mode")
    for values, allowed, what in ((names, MODELS, "models"), (modes, MODES, "mode"), ([size], SIZES, "size"),
                                  ([frames_on], FRAMES_ON, "frames-on")):
        bad = [v for v in values if v not in allowed]
        if bad:
            _fail(f"--{what}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        _fail(f"--device {device}: CUDA is not available here; use --device cpu (with --size tiny)")
    return BenchOptions(models=tuple(names), frames=_ints(frames, "frames"), modes=tuple(modes),
                        resolution=_resolution(resolution), size=size, device=device, dtype=dtype, repeats=repeats,
                        backend=backend, compile=compile_video, text_tokens=text_tokens, decode_tokens=decode_tokens,
                        paper_baseline=paper_baseline, budget_s=budget_s, point_budget_s=point_budget_s,
                        chunk_frames=chunk_frames, frames_on=frames_on)


def _run(opts: "BenchOptions", jsonl: Path) -> list[dict]:
    from vamba_eval.bench.runner import run_sweep
    from vamba_eval.models.vamba.backends import BackendUnavailable

    try:
        return run_sweep(opts, jsonl, echo=typer.echo)
    except (ValueError, BackendUnavailable) as err:
        _fail(str(err))


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_cmd)
