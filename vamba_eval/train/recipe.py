"""The training recipe in one place: data sizes, model sizes, per-stage steps and learning rates.

Presets: ``gpu`` (the bundled checkpoints: one GPU, a few minutes), ``cpu`` (same data, fewer
steps; slow but finishes on a laptop) and ``test`` (a few steps on a few videos, for the tests).
Every field can be overridden from the command line (``--set stage2.steps=500``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from vamba_eval.models.vamba.tiny import tiny_qwen2vl_config


@dataclass
class DataRecipe:
    first_seed: int = 1000  # demo releases use seed 0; training seeds start here
    videos_per_task: int = 300  # write_train_release(folder, seed) releases per task until this many videos
    task_videos: dict[str, int] = field(default_factory=lambda: {
        "lvbench": 400, "videomme": 300, "mlvu": 250, "longvideobench": 200, "mvbench": 200})
    caption_videos: int = 200  # extra random scripts rendered for captions only
    caption_long_frames: int = 16  # a quarter of the caption-only videos use this many frames
    template_copies: int = 1  # extra copies of each QA in a spec prompt template, options shuffled
    vision_pairs: int = 60000  # labelled frame pairs for the vision stage (train/vision.py; 0 = no stage)
    binding_drills: int = 4  # option-binding drills per QA (train/drills.py; 0 = none)
    vocab_size: int = 1024  # BPE vocabulary (special tokens included)
    workers: int = 2
    # frames drawn from the scripts (data.synth_frames: the run's sampler/resize + yuv420 chroma blur;
    # mean |Δ| ≈ 1.5/255 against decoding the encoded mp4) instead of encode → decode: ~10× faster
    fast_render: bool = True
    # > 0: while a stage trains, this many processes keep writing fresh releases (train/stream.py)
    stream_workers: int = 0
    stream_capacity: int = 6000  # fresh examples kept per (kind, frame shape) (~2 GB of 8×84×168 frames)
    # share of batches still drawn from the cached videos, and draws per fresh example the producers aim at:
    # with 25 % cached batches and each fresh example drawn ~2× the teacher memorised the cached videos (lettered
    # QA on them 0.43 → 0.79 in 470 s while held-out went 0.28 → 0.38); with none and ~1×, train ≈ held-out and
    # held-out rose 0.29 → 0.40 (scripts/diagnostics/README.md, session 9)
    stream_cached_share: float = 0.0
    stream_reuse: float = 1.0


@dataclass
class ModelRecipe:
    hidden: int = 128
    layers: int = 4
    intermediate: int = 384
    vision_embed: int = 96
    vision_depth: int = 4
    vision_heads: int = 6
    d_state: int = 16
    headdim: int = 16
    chunk_size: int = 16


@dataclass
class StageRecipe:
    steps: int
    lr: float
    batch: int = 48
    warmup: int = 50
    weight_decay: float = 0.01
    caption_fraction: float = 0.0  # share of caption batches (the rest is QA)
    drill_fraction: float = 0.0  # share of option-binding drill batches (train/drills.py)
    open_fraction: float = 0.0  # share of open-question batches (the question without options → option text)
    max_seconds: float = 0.0  # > 0: after 20 steps, cut ``steps`` to fit this wall-clock budget


@dataclass
class Recipe:
    seed: int = 0
    variant: str = "D"  # A–D of vamba_eval.models.vamba.convert.VARIANTS
    # M-RoPE on the student's cross-attention (config cross_attn_use_position_embeddings; the released 7B: off)
    cross_attn_rope: bool = False
    distill_lambda: float = 0.0  # the paper's final recipe; ablations sweep it
    distill_topk: int = 100
    video_norm_penalty: float = 1.0  # weight of forward.video_scale_penalty (teacher, stage 2)
    # forward.answer_aux_loss: decoder layer ``answer_aux_layer`` (1 … layers-1) is asked for the answer's content
    # token where the reply starts (teacher: binding + video; stage 2); 0 = off
    answer_aux_weight: float = 1.0
    answer_aux_layer: int = 2
    # forward.option_verify_loss: decoder layer ``option_verify_layer`` is asked, at each option line's last token,
    # whether that option is the answer (a training-only linear probe; teacher and stage 2); 0 = off. Off by default:
    # continuing a teacher with it gained nothing measurable (scripts/diagnostics/README.md, session 8, item 12)
    option_verify_weight: float = 0.0
    option_verify_layer: int = 2
    export_dtype: str = "float32"
    data: DataRecipe = field(default_factory=DataRecipe)
    model: ModelRecipe = field(default_factory=ModelRecipe)
    # the ViT + merger on labelled frame pairs first (train/vision.py): dense perception supervision
    # 45 s left the shapes half learnt (held-out exact shape set 0.23, its loss still falling); 170 s more on the
    # same tower reached 0.93 and lifted both bundled models on the demo (scripts/diagnostics/README.md, item 21)
    vision: StageRecipe = field(default_factory=lambda: StageRecipe(
        steps=30000, lr=2e-3, batch=256, warmup=100, max_seconds=180))
    # after the vision stage, the ViT (not the merger) stays frozen through the teacher's video training:
    # QA gradients through a from-scratch LM would wash out what it learnt, and its backward is saved
    teacher_trains_vit: bool = False
    # text-only option-binding drills (blank 1-token video) before the teacher's video training: the
    # letter binding needs ~2,000–3,000 steps × 128 to leave its plateau (scripts/diagnostics/README.md)
    binding: StageRecipe = field(default_factory=lambda: StageRecipe(
        steps=5000, lr=3e-3, batch=128, warmup=100, drill_fraction=1.0, max_seconds=150))
    # gpu preset: each stage stops at max_seconds (steps are cut after 20 to keep the schedule whole);
    # the steps actually run are in each stage's history.json and the checkpoint's training.json
    # (batch 256, drills 30 %: the mix whose lettered accuracy rose fastest in session 6's continuation runs)
    teacher: StageRecipe = field(default_factory=lambda: StageRecipe(
        steps=20000, lr=2e-3, batch=256, warmup=200, caption_fraction=0.1, drill_fraction=0.3, open_fraction=0.2,
        max_seconds=260))
    # rounds of ``teacher`` (the first after vision + binding, each further one a ``continue`` stage that reloads
    # the saved teacher: a round fits one 10-minute GPU lease); the letter needs several (diagnostics README)
    teacher_rounds: int = 6
    # > 0 (and teacher.max_seconds > 0): round 1's video training stops after this many seconds — its vision and
    # binding stages take ~330 s before it, and the round has to fit one 10-minute GPU lease as well
    teacher_first_seconds: float = 100.0
    stage1: StageRecipe = field(default_factory=lambda: StageRecipe(
        steps=5000, lr=2e-3, batch=128, warmup=100, caption_fraction=1.0, max_seconds=90))
    stage2: StageRecipe = field(default_factory=lambda: StageRecipe(
        steps=10000, lr=1e-3, batch=128, warmup=100, caption_fraction=0.1, drill_fraction=0.15, open_fraction=0.25,
        max_seconds=180))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def first_teacher_round(self) -> StageRecipe:
        """``teacher`` with round 1's wall-clock budget (``teacher_first_seconds``) where both are timed."""
        if self.teacher.max_seconds > 0 and self.teacher_first_seconds > 0:
            return dataclasses.replace(self.teacher, max_seconds=min(self.teacher.max_seconds,
                                                                     self.teacher_first_seconds))
        return self.teacher


def preset(name: str) -> Recipe:
    """``gpu`` | ``cpu`` | ``test``."""
    r = Recipe()
    if name == "gpu":
        import os

        r.data.workers = max(2, (os.cpu_count() or 2) - 1)
        # ~250–470 fresh examples/s per worker on the H100 host; a teacher step of 256 every 0.10–0.14 s reads
        # ~1,800–2,400/s (scripts/diagnostics/gpu_runs/session9/)
        r.data.stream_workers = min(13, max(1, (os.cpu_count() or 4) - 3))
        return r
    if name == "cpu":
        r.data.vision_pairs = 8000
        r.vision = StageRecipe(steps=800, lr=2e-3, batch=64, warmup=50)
        r.binding = StageRecipe(steps=2500, lr=3e-3, batch=32, warmup=100, drill_fraction=1.0)
        r.teacher = StageRecipe(steps=1800, lr=2e-3, batch=16, warmup=100, caption_fraction=0.1, drill_fraction=0.3,
                                open_fraction=0.2)
        r.teacher_rounds = 3
        r.stage1 = StageRecipe(steps=300, lr=2e-3, batch=16, warmup=50, caption_fraction=1.0)
        r.stage2 = StageRecipe(steps=1000, lr=1e-3, batch=16, warmup=50, caption_fraction=0.1, drill_fraction=0.15,
                               open_fraction=0.25)
        return r
    if name == "test":
        r.data = DataRecipe(videos_per_task=1, task_videos={}, caption_videos=2, caption_long_frames=8,
                            vocab_size=400, workers=1)
        r.model = ModelRecipe(hidden=32, layers=2, intermediate=64, vision_embed=32, vision_depth=1, vision_heads=2)
        r.answer_aux_layer = 1
        r.option_verify_layer = 1
        r.data.vision_pairs = 24
        r.vision = StageRecipe(steps=2, lr=3e-3, batch=4, warmup=0)
        r.binding = StageRecipe(steps=2, lr=3e-3, batch=4, warmup=0, drill_fraction=1.0)
        r.teacher = StageRecipe(steps=3, lr=3e-3, batch=4, warmup=0, caption_fraction=0.3)
        r.teacher_rounds = 2
        r.stage1 = StageRecipe(steps=2, lr=3e-3, batch=4, warmup=0, caption_fraction=1.0)
        r.stage2 = StageRecipe(steps=2, lr=3e-3, batch=4, warmup=0)
        return r
    raise ValueError(f"unknown preset {name!r}; use gpu, cpu or test")


def apply_overrides(recipe: Recipe, items: list[str]) -> Recipe:
    """``key=value`` pairs (dotted keys reach into sections): ``stage2.steps=500``, ``variant=B``."""
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. stage2.steps=500")
        target: Any = recipe
        *path, leaf = key.strip().split(".")
        for part in path:
            target = getattr(target, part, None)
        if not dataclasses.is_dataclass(target) or not hasattr(target, leaf):
            raise ValueError(f"--set {item!r}: no recipe field {key!r}")
        current = getattr(target, leaf)
        setattr(target, leaf, _override_value(item, current, raw))
    return recipe


def _override_value(item: str, current: Any, raw: str) -> Any:
    """``raw`` as the type of the field's current value: JSON for everything but strings; a bool must be
    true/false and an int a whole number (no silent ``bool("false")`` or truncated ``int(1.7)``)."""
    if isinstance(current, str):
        return raw
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise ValueError(f"--set {item!r}: {raw!r} is not a JSON value (numbers, true/false, lists)") from None
    if current is None:
        return value
    kind = type(current)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind in (int, float):  # a number, not a bool; an int field takes whole numbers only
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or value == int(value))
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ValueError(f"--set {item!r}: expected {kind.__name__} like the field's default {current!r}, got {raw}")
    return kind(value)


def qwen2vl_config(m: ModelRecipe, vocab_size: int, token_ids: dict[str, int]) -> dict[str, Any]:
    """The teacher's flat Qwen2-VL config: ``tiny_qwen2vl_config`` enlarged per the recipe."""
    cfg = tiny_qwen2vl_config(vocab_size=vocab_size, token_ids=token_ids, layers=m.layers, hidden=m.hidden)
    cfg["intermediate_size"] = m.intermediate
    cfg["vision_config"] = {**cfg["vision_config"], "depth": m.vision_depth, "embed_dim": m.vision_embed,
                            "num_heads": m.vision_heads, "mlp_ratio": 2, "hidden_size": m.hidden}
    return cfg


def mixer_overrides(m: ModelRecipe) -> dict[str, Any]:
    return {"d_state": m.d_state, "headdim": m.headdim, "chunk_size": m.chunk_size}
