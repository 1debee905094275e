"""The sweep: models × frame counts × modes (× baseline variants), one JSON line per point.

Per model: build (random weights, meta device → target device), warm up, then for each frame count
(ascending) and mode: time the workload (median of repeats, device synchronised), record peak
allocated / reserved memory (peaks reset per point), analytic FLOPs and MFU against the matmul
ceiling measured at the start of the same run. A CUDA OOM is recorded as that point's result with
the largest frame count that fitted (``frame_limit``); larger counts of the same model / variant /
mode are skipped and the sweep goes on. Rows are appended and flushed as they come, so a sweep
cut off by a wall-clock limit keeps what it measured.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from vamba_eval.bench import flops as F
from vamba_eval.bench import measure as M
from vamba_eval.bench.subjects import make_frames, make_prompt

SCHEMA = "vamba-eval-bench/1"
MODES = ("prefill", "decode", "train")
MODELS = ("vamba", "qwen2vl")
SIZES = ("7b", "tiny")
FRAMES_ON = ("host", "device")
TIME_UNIT = {"prefill": "prefill call", "decode": "decoded token", "train": "train step"}
TRAINABLE = {"vamba": ("ssm", "cross_attn"), "qwen2vl": ("self_attn", "mlp")}


@dataclass(frozen=True)
class Point:
    model: str
    variant: str
    mode: str
    frames: int
    video_tokens: int


@dataclass
class BenchOptions:
    models: tuple[str, ...] = MODELS
    frames: tuple[int, ...] = (8, 16, 32)
    modes: tuple[str, ...] = ("prefill",)
    resolution: tuple[int, int] = (640, 360)  # width, height as requested; resized to multiples of 28
    size: str = "7b"
    device: str = "cuda"
    dtype: Optional[str] = None  # default: bfloat16 on CUDA, float32 on CPU
    repeats: int = 3
    backend: Optional[str] = None
    compile: bool = False
    text_tokens: int = 60
    decode_tokens: int = 32
    loss_tokens: int = 8
    seed: int = 0
    paper_baseline: bool = True  # also time Qwen2-VL prefill with logits for every position
    point_budget_s: float = 30.0  # stop repeating a point once this much was spent on it
    budget_s: Optional[float] = None  # start no new point after this many seconds
    phases: bool = True  # VAMBA prefill: one extra hooked run for per-phase times
    # one untimed prefill before each point's timed ones (default: with compile, where a new frame count can
    # recompile — e.g. the last, shorter streamed piece of 3,600 frames — and a median of two would include it)
    warm_each_point: Optional[bool] = None
    chunk_frames: Optional[int] = None  # VAMBA's streamed piece (frames); None: the model's auto_chunk_frames
    # where the input frames live: "host" (pinned; copied to the GPU inside the timed region — VAMBA one streamed
    # piece at a time, Qwen2-VL all at once for its patchify — as `vamba-eval run` feeds both) or "device" (all on
    # the GPU before the point, the accounting of the rows before 2026-11-25 afternoon)
    frames_on: str = "host"
    fault_hook: Optional[Callable[[Point], None]] = field(default=None, repr=False)  # tests: simulate faults


def configs(size: str) -> dict[str, dict[str, Any]]:
    from vamba_eval.models.vamba import tiny

    if size == "7b":
        return {"vamba": tiny.VAMBA_7B, "qwen2vl": tiny.QWEN2VL_7B}
    if size == "tiny":
        return {"vamba": tiny.tiny_vamba_config(), "qwen2vl": tiny.tiny_qwen2vl_config()}
    raise ValueError(f"unknown size {size!r}; choose one of {SIZES}")


def frame_size(resolution: tuple[int, int], raw: dict[str, Any]) -> tuple[int, int]:
    """(height, width) after the official resize: each edge to the nearest multiple of patch × merge
    (``video.sampling.target_size`` without edge caps; not imported: ``vamba_eval.video`` needs PyAV)."""
    v = raw["vision_config"]
    unit = int(v["patch_size"]) * int(v["spatial_merge_size"])
    w, h = (max(unit, int(round(x / unit)) * unit) for x in resolution)
    return h, w


def build_subject(name: str, raw: dict[str, Any], opts: BenchOptions, device: torch.device, dtype: torch.dtype) -> Any:
    if name == "vamba":
        from vamba_eval.bench.subjects import VambaSubject

        subject: Any = VambaSubject(raw, device, dtype, opts.backend, opts.compile, opts.seed, opts.chunk_frames)
    elif name == "qwen2vl":
        from vamba_eval.bench.qwen_subject import QwenSubject

        subject = QwenSubject(raw, device, dtype, opts.seed, paper_variant=opts.paper_baseline)
    else:
        raise ValueError(f"unknown model {name!r}; choose from {MODELS}")
    subject.frames_on = opts.frames_on
    return subject


def point_flops(point: Point, raw: dict[str, Any], hw: tuple[int, int], opts: BenchOptions) -> F.Flops:
    keep = 0 if point.variant == "paper" else 1
    work = F.Workload(point.frames, hw[0], hw[1], opts.text_tokens, keep_logits=keep)
    if point.mode == "prefill":
        return F.prefill(point.model, raw, work)[0]
    if point.mode == "decode":
        return F.decode_mean(point.model, raw, work, opts.decode_tokens)
    keep = 0 if point.model == "vamba" else opts.loss_tokens + 1  # VAMBA's training forward keeps every position
    work = F.Workload(point.frames, hw[0], hw[1], opts.text_tokens, keep_logits=keep)
    return F.train_step(point.model, raw, work, TRAINABLE[point.model])[0]


def input_frames(subject: Any, frames: torch.Tensor) -> torch.Tensor:
    """``frames`` where ``subject.frames_on`` says: "host" → pinned CPU memory (on a CUDA device), else as made."""
    if subject.frames_on == "host" and frames.device.type == "cuda":
        return frames.cpu().pin_memory()
    return frames


class Sweep:
    def __init__(self, opts: BenchOptions, out: Optional[Path], echo: Callable[[str], None] = print) -> None:
        from vamba_eval.models.base import resolve_dtype

        bad = [m for m in opts.modes if m not in MODES] + [m for m in opts.models if m not in MODELS]
        if opts.frames_on not in FRAMES_ON:
            raise ValueError(f"frames_on must be one of {FRAMES_ON}, got {opts.frames_on!r}")
        if bad or not opts.frames or min(opts.frames) < 1:
            raise ValueError(f"bad models/modes/frames: {bad or opts.frames}; models {MODELS}, modes {MODES}")
        self.opts, self.out, self.echo = opts, out, echo
        self.device = torch.device(opts.device)
        self.dtype = resolve_dtype(opts.dtype, self.device)
        self.raws = configs(opts.size)
        self.rows: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()
        self.base: dict[str, Any] = {}

    # --- top level -----------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        env = M.environment(self.device)
        ceiling = M.matmul_ceiling(self.device, self.dtype)
        self.echo(f"{env['gpu']}: {ceiling['dtype']} matmul ceiling {ceiling['tflops']:.3g} TFLOP/s")
        o = self.opts
        self.base = {"schema": SCHEMA, "run_id": f"{env['date']}-{os.getpid()}", **env, "size": o.size,
                     "dtype": str(self.dtype).replace("torch.", ""), "resolution": f"{o.resolution[0]}x{o.resolution[1]}",
                     "text_tokens": o.text_tokens, "repeats": o.repeats, "compile": o.compile,
                     "ceiling_tflops": ceiling["tflops"], "ceiling": ceiling}
        for name in o.models:
            self._model(name)
        return self.rows

    def _model(self, name: str) -> None:
        raw = self.raws[name]
        hw = frame_size(self.opts.resolution, raw)
        t0 = time.perf_counter()
        try:
            subject = build_subject(name, raw, self.opts, self.device, self.dtype)
        except Exception as err:  # OOM: the weights do not fit; anything else: recorded, next model
            oom = M.is_oom(err)
            if not oom:
                traceback.print_exc(file=sys.stderr)
            M.release(self.device, collect=True)
            for mode in self.opts.modes:
                self._emit({"model": name, "variant": "-", "mode": mode, "frames": min(self.opts.frames),
                            "status": "oom" if oom else "error", "frame_limit": None,
                            "error": ("weights do not fit: " if oom else "build failed: ") + M.first_line(err)})
            return
        info = {"params": subject.params, "weights_gb": M.allocated_gb(self.device), "backend": subject.backend,
                "frame_size": f"{hw[1]}x{hw[0]}", "build_s": time.perf_counter() - t0}
        self.echo(f"[{time.perf_counter() - self.t0:6.0f}s] built {name} ({subject.params:,} params) in "
                  f"{info['build_s']:.1f}s")
        try:
            self._warmup(subject, hw)
            self._frames_loop(subject, raw, hw, info)
        finally:
            subject.close()
            del subject
            M.release(self.device, collect=True)

    def _warmup(self, subject: Any, hw: tuple[int, int]) -> None:
        """Kernels, autotuning, allocator: the smallest frame count, not recorded (with torch.compile also the
        next one, so that dynamic shapes are compiled before timing)."""
        prompt = make_prompt(subject.raw, self.opts.text_tokens, self.device, self.opts.seed)
        for n in sorted(set(self.opts.frames))[:2 if self.opts.compile else 1]:
            frames = input_frames(subject, make_frames(n, *hw, self.device, self.opts.seed))
            try:
                for variant in subject.variants("prefill"):
                    ctx = subject.prefill(frames, prompt, variant)
                if "decode" in self.opts.modes:
                    subject.decode(frames, prompt, 2, 1, ctx if subject.name == "vamba" else None)
                ctx = None
                if "train" in self.opts.modes:
                    subject.train_step(frames, prompt, self.opts.loss_tokens)
            except Exception as err:  # the points run (and record) the same failure
                self.echo(f"warm-up of {subject.name} at {n} frames failed ({M.first_line(err)}); "
                          "the points will show it")
                ctx = None
                M.release(self.device, collect=True)
            M.sync(self.device)
            M.release(self.device)

    def _frames_loop(self, subject: Any, raw: dict[str, Any], hw: tuple[int, int], info: dict[str, Any]) -> None:
        o = self.opts
        prompt = make_prompt(raw, o.text_tokens, self.device, o.seed)
        oom_at: dict[tuple[str, str], int] = {}
        last_ok: dict[tuple[str, str], int] = {}
        for n in sorted(set(o.frames)):
            frames = input_frames(subject, make_frames(n, *hw, self.device, o.seed + n))
            state: dict[str, Any] = {}
            for mode in [m for m in MODES if m in o.modes]:
                if mode == "train":
                    state.clear()  # the prefill's K/V cache is not needed any more
                    M.release(self.device)
                for variant in subject.variants(mode):
                    key = (variant, mode)
                    if key in oom_at:
                        continue
                    geo = F.geometry(F.vision_dims(raw), n, *hw)
                    point = Point(subject.name, variant, mode, n, geo.video_tokens)
                    row = {**self._point(subject, point, frames, prompt, state), **info}
                    if row["status"] == "oom":
                        oom_at[key] = n
                        row["frame_limit"] = last_ok.get(key)
                    elif row["status"] == "ok":
                        last_ok[key] = n
                        self._add_flops(row, point, raw, hw)
                    self._emit(row)
            del frames, state
            M.release(self.device)

    # --- one point -----------------------------------------------------------------------
    def _point(self, subject: Any, point: Point, frames: torch.Tensor, prompt: Any,
               state: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {**asdict(point), "time_unit": TIME_UNIT[point.mode], "frames_on": subject.frames_on}
        if self.opts.budget_s is not None and time.perf_counter() - self.t0 > self.opts.budget_s:
            return {**row, "status": "skipped", "error": f"time budget of {self.opts.budget_s:.0f}s spent"}
        try:
            with M.PeakMemory(self.device) as mem:
                if self.opts.fault_hook is not None:
                    self.opts.fault_hook(point)
                row.update(self._measure(subject, point, frames, prompt, state))
            if point.mode != "train":  # how the prefill streamed (the train step runs every frame at once)
                row.update(subject.stream_info(point.frames))
            row.update(status="ok", peak_alloc_gb=mem.allocated_gb, peak_reserved_gb=mem.reserved_gb)
            if point.mode == "prefill" and subject.name == "vamba" and self.opts.phases:
                row["phase_s"] = self._phases(subject, frames, prompt, state)
        except torch.cuda.OutOfMemoryError as err:
            state.clear()
            row.update(status="oom", error=M.first_line(err))
        except Exception as err:  # a broken point must not end the sweep: recorded, traceback on stderr
            traceback.print_exc(file=sys.stderr)
            state.clear()
            row.update(status="error", error=M.first_line(err))
        M.release(self.device, collect=row["status"] != "ok")
        return row

    def _measure(self, subject: Any, point: Point, frames: torch.Tensor, prompt: Any,
                 state: dict[str, Any]) -> dict[str, Any]:
        o, dev = self.opts, self.device
        if point.mode == "prefill":
            warm = o.compile if o.warm_each_point is None else o.warm_each_point
            if warm:
                subject.prefill(frames, prompt, point.variant)  # untimed: compile / autotune for this shape
                M.sync(dev)
                M.release(dev)
            times, ctx = M.repeat(dev, lambda: subject.prefill(frames, prompt, point.variant), o.repeats,
                                  o.point_budget_s)
            if subject.name == "vamba":
                state["context"] = ctx  # decode reuses it
            del ctx
            return {"time_s": M.median(times), "time_s_all": times, "untimed_warmup_runs": int(warm)}
        if point.mode == "decode":
            got = subject.decode(frames, prompt, o.decode_tokens, o.repeats, state.pop("context", None))
            per = got["per_token_s"]
            med = M.median(per)
            return {"time_s": med, "time_s_all": per, "decode_tokens": got["decode_tokens"],
                    "decode_tok_per_s": 1.0 / med if med else None}
        times, res = M.repeat(dev, lambda: subject.train_step(frames, prompt, o.loss_tokens), o.repeats,
                              o.point_budget_s)
        return {"time_s": M.median(times), "time_s_all": times, **res,
                "trainable_params": sum(p.numel() for p in subject.trainable())}

    def _phases(self, subject: Any, frames: torch.Tensor, prompt: Any, state: dict[str, Any]) -> Optional[dict]:
        """One more prefill with phase hooks, outside the timed repeats and the memory peak; its K/V
        replace the kept ones (never two video caches at once)."""
        from vamba_eval.bench.phases import vamba_prefill_phases

        state.pop("context", None)
        try:
            times, state["context"] = vamba_prefill_phases(subject.model, frames, prompt.ids())
            return times
        except torch.cuda.OutOfMemoryError:
            M.release(self.device, collect=True)
            return None

    def _add_flops(self, row: dict[str, Any], point: Point, raw: dict[str, Any], hw: tuple[int, int]) -> None:
        f = point_flops(point, raw, hw, self.opts)
        row["flops"], row["flops_phases"] = f.total, f.phases()
        t = row.get("time_s")
        if t:
            row["achieved_tflops"] = f.total / t / 1e12
            row["mfu"] = row["achieved_tflops"] / self.base["ceiling_tflops"]

    def _emit(self, row: dict[str, Any]) -> None:
        row = {**self.base, **row}
        self.rows.append(row)
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            with open(self.out, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
        self.echo(f"[{time.perf_counter() - self.t0:6.0f}s] {progress_line(row)}")


def progress_line(r: dict[str, Any]) -> str:
    head = f"{r['model']:>8} {r['variant']:>8} {r['mode']:>7} {r['frames']:>6}f"
    if r["status"] == "oom":
        return f"{head}  OOM (largest that fitted: {r.get('frame_limit') or 'none'})"
    if r["status"] != "ok":
        return f"{head}  {r['status'].upper()}: {r.get('error', '')}"
    mem = "" if r.get("peak_alloc_gb") is None else f" {r['peak_alloc_gb']:.1f} GB"
    mfu = "" if r.get("mfu") is None else f" MFU {100 * r['mfu']:.0f}%"
    rate = f" {r['decode_tok_per_s']:.1f} tok/s" if r.get("decode_tok_per_s") else ""
    return f"{head}  {r['time_s']:.3f} s/{r['time_unit']}{mem}{mfu}{rate}"


def run_sweep(opts: BenchOptions, out: Optional[Path] = None, echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    return Sweep(opts, out, echo).run()
