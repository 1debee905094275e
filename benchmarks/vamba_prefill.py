"""VAMBA-7B prefill on one GPU: random bf16 weights, the suite's real code paths.

Builds the 7B (parameters on the meta device, materialised once on the GPU), then for each
frame count times the whole prefill — ViT + per-layer cross-attn K/V + Mamba-2 updates
(streamed in frame chunks) + the text prompt — with CUDA-synchronised timing (median of repeats
after a warm-up) and peak memory; then greedy decoding speed after the last prefill.

    python benchmarks/vamba_prefill.py --frames 64,1024 --out results.jsonl [--backend fla]

640×360 frames are resized like the official scripts (multiples of 28 → 644×364: 299 LLM tokens
per 2 frames). Prints a short table last; JSON lines go to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import DynamicCache  # noqa: E402

from vamba_eval.models.meta import materialize, params_on_meta  # noqa: E402
from vamba_eval.models.vamba.backends import select_backend  # noqa: E402
from vamba_eval.models.vamba.config import VambaConfig  # noqa: E402
from vamba_eval.models.vamba.modeling import VambaForConditionalGeneration  # noqa: E402
from vamba_eval.models.vamba.tiny import VAMBA_7B  # noqa: E402

H, W = 364, 644  # 640×360 rounded to multiples of 28
TEXT_TOKENS = 60
FRAMES_ON = "host"  # main() sets it from --frames-on: "host" (pinned, copied piece by piece, as `run` does) | "device"
KERNEL_TIME = False  # main() sets it from --kernel-time


def versions() -> dict[str, str]:
    out = {}
    for name in ("torch", "transformers", "triton", "fla-core", "mamba-ssm"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def build(backend: str | None, seed: int, keep_last_mixer: bool = False) -> VambaForConditionalGeneration:
    with params_on_meta():
        model = VambaForConditionalGeneration(VambaConfig.from_dict(VAMBA_7B))
    if not keep_last_mixer:
        model.release_unused_video_mixer()  # as the suite's adapter and `vamba-eval bench` do
    materialize(model, "cuda", torch.bfloat16)
    model.init_weights(seed)
    model.set_ssm_backend(select_backend(backend, torch.device("cuda")))
    return model.eval()


def prefill(model, frames: torch.Tensor, ids: torch.Tensor, chunk: int | None):
    video = model.encode_video(frames, chunk_frames=chunk)
    with torch.inference_mode():
        cache = DynamicCache()
        logits = model.text_step(ids, video, cache, start=0)
    return video, cache, logits


def make_inputs(n_frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 frames (where --frames-on says) and prompt ids."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    frames = torch.randint(0, 256, (n_frames, H, W, 3), dtype=torch.uint8, device="cuda", generator=g)
    ids = torch.randint(0, 150000, (1, TEXT_TOKENS), device="cuda", generator=g)
    return (frames.cpu().pin_memory() if FRAMES_ON == "host" else frames), ids


def time_prefill(model, n_frames: int, chunk: int | None, repeats: int, vit_chunk: int | None = None,
                 tail: bool | int | None = None) -> dict:
    """``tail``: None (the model's choice), False, True or the tail's smallest piece in temporal slices."""
    frames, ids = make_inputs(n_frames, n_frames)
    default_vit, default_tail, default_min = model.vit_chunk_frames, model.stream_tail, model.tail_min_slices
    model.vit_chunk_frames = vit_chunk or default_vit
    model.stream_tail = default_tail if tail is None else bool(tail)
    if tail is not None and not isinstance(tail, bool):
        model.tail_min_slices = tail
    try:
        vit = model.vit_frames_for(model.chunk_frames_for(n_frames, chunk))
        row = {**_time_prefill(model, frames, ids, chunk, repeats), "vit_chunk_frames": vit, "frames_on": FRAMES_ON,
               "tail": model.tail_for(n_frames, chunk), "tail_min_slices": model.tail_min_slices}
        return {**row, **(kernel_time(model, frames, ids, chunk) if KERNEL_TIME else {})}
    finally:
        model.vit_chunk_frames, model.stream_tail, model.tail_min_slices = default_vit, default_tail, default_min


def _time_prefill(model, frames: torch.Tensor, ids: torch.Tensor, chunk: int | None, repeats: int) -> dict:
    n_frames = frames.shape[0]
    times = []
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        t0 = time.perf_counter()
        video, cache, logits = prefill(model, frames, ids, chunk)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        del cache, logits
        if _ < repeats - 1:
            del video
    peak, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    dec = decode_speed(model, video, ids)
    tokens, chunks = video.num_tokens, video.chunks
    del video
    return {"frames": n_frames, "video_tokens": tokens, "chunk_frames": model.chunk_frames_for(n_frames, chunk),
            **phase_peaks(model, frames, ids, chunk),
            "chunks": chunks, "prefill_s_median": statistics.median(times), "prefill_s_all": times,
            "peak_alloc_gb": peak / 1e9, "peak_reserved_gb": reserved / 1e9,
            "frames_input_gb": frames.numel() / 1e9, "weights_gb": base / 1e9, **dec}


def phase_peaks(model, frames: torch.Tensor, ids: torch.Tensor, chunk: int | None) -> dict:
    """One more prefill: peak allocated GB of the video encode and of the text pass, and what is held between."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    video = model.encode_video(frames, chunk_frames=chunk)
    torch.cuda.synchronize()
    encode_peak, held = torch.cuda.max_memory_allocated(), torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        model.text_step(ids, video, DynamicCache(), start=0)
    torch.cuda.synchronize()
    kv = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in video.kv)
    return {"peak_encode_gb": encode_peak / 1e9, "peak_text_gb": torch.cuda.max_memory_allocated() / 1e9,
            "held_after_encode_gb": held / 1e9, "kv_cache_gb": kv / 1e9}


def kernel_time(model, frames: torch.Tensor, ids: torch.Tensor, chunk: int | None) -> dict:
    """One more prefill under the profiler: the sum of its GPU kernel durations against its wall time. A sum well
    below the unprofiled prefill time means the GPU waited for the host (launch overhead), not for work."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        prefill(model, frames, ids, chunk)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    print(f"host time by op, {frames.shape[0]} frames, pieces of {model.chunk_frames_for(frames.shape[0], chunk)}:\n"
          + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=70),
          flush=True)
    return {"gpu_kernel_s": sum(e.time_range.elapsed_us() for e in kernels) / 1e6, "gpu_kernels": len(kernels),
            "profiled_wall_s": wall}


def memory_trace(model, n_frames: int, top: int = 25) -> None:
    """Record every CUDA allocation of one prefill at ``n_frames`` (default pieces, frames as --frames-on says),
    replay the trace and print what was live at its peak: the largest blocks with the code that made them."""
    frames, ids = make_inputs(n_frames, n_frames)
    prefill(model, frames, ids, None)  # this shape compiled and warm
    torch.cuda.synchronize()
    torch.cuda.memory._record_memory_history(max_entries=2_000_000)
    prefill(model, frames, ids, None)
    torch.cuda.synchronize()
    snap = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    live: dict[int, tuple[int, list]] = {}
    total = peak = 0
    at_peak: dict[int, tuple[int, list]] = {}
    for ev in snap["device_traces"][0]:
        if ev["action"] == "alloc":
            live[ev["addr"]] = (ev["size"], ev.get("frames", []))
            total += ev["size"]
            if total > peak:
                peak, at_peak = total, dict(live)
        elif ev["action"] in ("free_requested",) and ev["addr"] in live:
            total -= live.pop(ev["addr"])[0]
    def is_kv(frames_: list) -> bool:  # the pieces' K/V (project_kv) and the joined per-layer buffers (_join)
        return any(f["name"] in ("project_kv", "_join") for f in frames_)

    kv = [v for v in at_peak.values() if is_kv(v[1])]
    rest = [v for v in at_peak.values() if not is_kv(v[1])]
    print(f"memory trace, {n_frames} frames: peak {peak / 1e9:.3f} GB above the allocations made before it "
          f"({len(at_peak)} blocks live then): the K/V cache {sum(s for s, _ in kv) / 1e9:.3f} GB in {len(kv)} "
          f"blocks, the rest {sum(s for s, _ in rest) / 1e9:.3f} GB; the largest of the rest:", flush=True)
    for size, frames_ in sorted(rest, key=lambda x: -x[0])[:top]:
        ours = [f"{Path(f['filename']).name}:{f['line']} {f['name']}" for f in frames_
                if "vamba_eval" in f["filename"] or "benchmarks" in f["filename"]][:4]
        print(f"  {size / 1e6:9.1f} MB  {' <- '.join(ours) or (frames_[0]['name'] if frames_ else '?')}", flush=True)


def decode_speed(model, video, ids, new_tokens: int = 32) -> dict:
    torch.cuda.synchronize()
    out, times = model.generate(ids, video, max_new_tokens=new_tokens, eos_token_ids=())
    torch.cuda.synchronize()
    return {"decode_tokens": len(out), "decode_tok_per_s": (len(out) - 1) / max(times["generate_s"], 1e-9)}


def profile(model, n_frames: int, out: Path) -> None:
    """Where a prefill spends GPU time: top ops, and the ViT alone vs the whole prefill."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from vamba_eval.models.vamba.vision import patchify, run_vision_tower

    g = torch.Generator(device="cuda").manual_seed(1)
    frames = torch.randint(0, 256, (n_frames, H, W, 3), dtype=torch.uint8, device="cuda", generator=g)
    ids = torch.randint(0, 150000, (1, TEXT_TOKENS), device="cuda", generator=g)
    vcfg = model.hf_config.vision_config
    with torch.inference_mode():
        for _ in range(2):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            step = model.chunk_frames_for(n_frames)
            for s0 in range(0, n_frames, step):
                px, grid = patchify(frames[s0:s0 + step], vcfg.patch_size, vcfg.temporal_patch_size,
                                    vcfg.spatial_merge_size)
                run_vision_tower(model.visual, px, grid.thw())
            torch.cuda.synchronize()
            vit = time.perf_counter() - t0
    print(f"profile {n_frames} frames: ViT alone {vit:.2f}s", flush=True)
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        prefill(model, frames, ids, None)
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=35, max_name_column_width=60)
    out.with_suffix(".profile.txt").write_text(table)
    print(table, flush=True)


def run_plan(model, plan: list, env: dict, args) -> list[dict]:
    rows = []
    with open(args.out, "a") as fh:
        for n, chunk, vit, tail in plan:
            try:
                row = {**env, **time_prefill(model, n, chunk, args.repeats if n <= 256 else 2, vit, tail)}
            except torch.cuda.OutOfMemoryError as err:
                row = {**env, "frames": n, "chunk_frames": chunk, "vit_chunk_frames": vit,
                       "oom": str(err).splitlines()[0]}
            torch.cuda.empty_cache()
            rows.append(row)
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            print(json.dumps(row), flush=True)
    return rows


TAILS = {"": None, "auto": None, "on": True, "off": False}


def make_plan(counts: list[int], args, points: str = "") -> list[tuple[int, int | None, int | None, bool | int | None]]:
    """(frames, chunk, vit chunk, tail): each count with the defaults, the extra sizes at the largest count, then
    ``points`` (comma list of FRAMES:CHUNK:VIT:TAIL, empty fields = the default; TAIL on | off | auto)."""
    extra: list[tuple[int, int | None, int | None, bool | int | None]] = [
        (counts[-1], int(c), None, None) for c in args.chunks.split(",") if c]
    extra += [(counts[-1], None, int(v), None) for v in args.vit_chunks.split(",") if v]
    for point in filter(None, points.split(",")):
        n, chunk, vit, tail = (point.split(":") + ["", "", ""])[:4]
        if tail not in TAILS and not tail.isdigit():
            raise SystemExit(f"--points {point!r}: TAIL must be on, off, auto, empty or the tail's smallest piece "
                             f"in temporal slices, got {tail!r}")
        extra.append((int(n), int(chunk) if chunk else None, int(vit) if vit else None,
                      TAILS[tail] if tail in TAILS else int(tail)))
    return [(n, None, None, None) for n in counts] + extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", default="64,1024")
    ap.add_argument("--chunks", default="", help="extra chunk sizes to try at the largest frame count "
                    "(of --frames, and of --compile)")
    ap.add_argument("--vit-chunks", default="", help="extra ViT piece sizes (frames) to try at the largest frame "
                    "count (of --frames, and of --compile)")
    ap.add_argument("--points", default="", help="extra compiled points: comma list of FRAMES:CHUNK:VIT:TAIL "
                    "(empty fields = the default; TAIL on|off cuts the last piece in halves or not, N: down to N "
                    "slices), e.g. 256:64:64,1024::32,256:::off,256:::4")
    ap.add_argument("--keep-last-mixer", action="store_true", help="allocate the last layer's video mixer, which "
                    "the prefill never runs (the suite releases it)")
    ap.add_argument("--backend", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", type=int, default=0, help="profile one prefill at this many frames, then exit "
                    "(after compiling the video path if --compile is given)")
    ap.add_argument("--sdpa", default="", help="restrict SDPA backends (ViT and decoder): flash | cudnn | "
                    "efficient | math")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode for --compile (e.g. "
                    "max-autotune-no-cudagraphs: Triton GEMM templates with fused epilogues, long warm-up)")
    ap.add_argument("--frames-on", choices=("host", "device"), default="host", help="input frames in pinned host "
                    "memory, copied piece by piece (as `vamba-eval run` feeds the model), or all on the GPU")
    ap.add_argument("--kernel-time", action="store_true", help="per point, one more prefill under the profiler: "
                    "the sum of GPU kernel times vs its wall time (is the GPU waiting for the host?)")
    ap.add_argument("--memory-trace", type=int, default=0, help="after the compiled points, record the "
                    "allocations of one prefill at this many frames and print what is live at its peak")
    ap.add_argument("--compile", default="", help="comma list of frame counts to re-time after torch.compile of "
                    "the video path (ViT blocks + mixers)")
    args = ap.parse_args()
    global FRAMES_ON, KERNEL_TIME
    FRAMES_ON, KERNEL_TIME = args.frames_on, args.kernel_time
    env = {"bench": "vamba_prefill", "gpu": torch.cuda.get_device_name(), "versions": versions(),
           "python": platform.python_version(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "resolution": f"{W}x{H}", "text_tokens": TEXT_TOKENS, "dtype": "bfloat16"}
    if args.sdpa:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        names = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                 "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
        sdpa_kernel([names[x] for x in args.sdpa.split(",")]).__enter__()
        os.environ["VAMBA_EVAL_VIT_SDPA"] = args.sdpa  # the ViT sets its own backends (vision_sdpa_backends)
        env["sdpa"] = args.sdpa
    t0 = time.perf_counter()
    model = build(args.backend, args.seed, args.keep_last_mixer)
    env["backend"] = model.ssm_backend.name
    env["vit_sdpa"] = os.environ.get("VAMBA_EVAL_VIT_SDPA", "flash,efficient,math")
    env["vit_split_compile"] = os.environ.get("VAMBA_EVAL_VIT_SPLIT_COMPILE", "0")
    env["fused_ops"] = list(model.ssm_backend.fused)  # [] with VAMBA_EVAL_FUSED_OPS=0 or no triton
    env["params"] = sum(p.numel() for p in model.parameters())  # allocated (without a released mixer)
    env["weights_allocated_gb"] = torch.cuda.memory_allocated() / 1e9
    print(f"built VAMBA-7B ({env['params']:,} params) in {time.perf_counter() - t0:.1f}s, backend {env['backend']}",
          flush=True)
    time_prefill(model, 16, None, 1)  # warm-up: kernels, autotuning, allocator
    if args.profile:
        if args.compile:  # profile the compiled video path (what `--compile` times)
            model.compile_video_path()
            time_prefill(model, 64, None, 1)
        profile(model, args.profile, args.out)
        return
    frame_counts = [int(x) for x in args.frames.split(",") if x]
    plan = make_plan(frame_counts, args)
    rows = run_plan(model, plan, {**env, "variant": "eager"}, args)
    if args.compile:
        t0 = time.perf_counter()
        model.compile_video_path(args.compile_mode)
        env["compile_mode"] = args.compile_mode or "default"
        time_prefill(model, 64, None, 1)  # compile (dynamic shapes) + warm-up
        print(f"torch.compile warm-up {time.perf_counter() - t0:.1f}s", flush=True)
        counts = [int(n) for n in args.compile.split(",")]
        plan = make_plan(counts, args, args.points)
        rows += run_plan(model, plan, {**env, "variant": "compiled"}, args)
        if args.memory_trace:
            memory_trace(model, args.memory_trace)
    print(f"\n{env['gpu']} · torch {env['versions'].get('torch')} · backend {env['backend']} "
          f"(fused ops: {', '.join(env['fused_ops']) or 'off'}) · {W}x{H} bf16")
    print(f"{'variant':>9} {'frames':>7} {'tokens':>8} {'chunk':>6} {'vit':>4} {'tail':>4} {'prefill s':>10} {'peak GB':>8} "
          f"{'encode/text GB':>15} {'decode tok/s':>13} {'GPU kernels s':>14}")
    for r in rows:
        if "oom" in r:
            print(f"{r['variant']:>9} {r['frames']:>7} {'':>8} {str(r['chunk_frames']):>6}   OOM")
            continue
        split = f"{r['peak_encode_gb']:.2f}/{r['peak_text_gb']:.2f}"
        print(f"{r['variant']:>9} {r['frames']:>7} {r['video_tokens']:>8} {r['chunk_frames']:>6} "
              f"{r['vit_chunk_frames']:>4} {r['tail_min_slices'] if r['tail'] else 'off':>4} {r['prefill_s_median']:>10.2f} "
              f"{r['peak_alloc_gb']:>8.3f} {split:>15} "
              f"{r['decode_tok_per_s']:>13.1f} {r.get('gpu_kernel_s', float('nan')):>14.2f}")


if __name__ == "__main__":
    main()
