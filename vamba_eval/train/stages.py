"""The stages of the recipe (shared/specs/vamba_model.md "Training recipe"), each reading the
previous stage's checkpoint folder and writing its own:

    teacher   a tiny Qwen2-VL trained from scratch: ViT on labelled frames (train/vision.py), option-binding
              drills on a blank video, then captions + QA → ``DIR/teacher``
    continue  one more round of the teacher's captions + QA on ``DIR/teacher`` (``Recipe.teacher_rounds``)
    convert   Qwen2-VL → VAMBA variant (cross-attn init, mixer) → ``DIR/converted``
    stage1    only cross_attn, vision_mixer, α; captions; LM + λ·KL(teacher ‖ student) → ``DIR/stage1``
    stage2    decoder (+ merger) on QA; ViT and lm_head frozen → ``DIR/stage2``
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from vamba_eval.train import ckpt
from vamba_eval.train.batches import Batch, BlankVideo, TrainSet, token_ids
from vamba_eval.train.forward import (aligned_kl, answer_aux_loss, batch_vision_attention, lm_loss, option_verify_loss,
                                      student_logits, teacher_forward, track_layer, track_video_tokens,
                                      video_scale_penalty)
from vamba_eval.train.loop import Logger, train, validate
from vamba_eval.train.recipe import Recipe, mixer_overrides, qwen2vl_config
from vamba_eval.train.stream import StreamSet, training_set
from vamba_eval.train.vision import run_vision

STAGE1_KEYS = (".cross_attn.", ".vision_mixer.", ".alpha")
STAGE2_FROZEN = ("visual.patch_embed.", "visual.blocks.", "lm_head.")


def load_tokenizer(data_dir: Path) -> Any:
    from vamba_eval.models.tokenizer import load_tokenizer as load

    return load(Path(data_dir) / "tokenizer")


def new_teacher(recipe: Recipe, tokenizer: Any, seed: int) -> Any:
    """A randomly initialised tiny Qwen2-VL (the `transformers` class) for this tokenizer."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from vamba_eval.models.tokenizer import special_token_ids

    torch.manual_seed(seed)
    cfg = Qwen2VLConfig(**qwen2vl_config(recipe.model, len(tokenizer), special_token_ids(tokenizer)))
    cfg._attn_implementation = "sdpa"
    return Qwen2VLForConditionalGeneration(cfg)


# (weight, layer k, the training-only probe) of the option-verification loss (forward.option_verify_loss)
Verify = tuple[float, int, torch.nn.Module]


def teacher_step(model: Any, video_pad: int, norm_weight: float = 0.0, aux: tuple[float, int] = (0.0, 0),
                 verify: Optional[Verify] = None):
    """LM loss (+ ``norm_weight`` · video-token scale penalty, see ``forward.video_scale_penalty``)
    (+ ``aux`` = (weight, layer k): weight · the answer-content loss at layer k, ``forward.answer_aux_loss``)
    (+ ``verify``: weight · the option-verification loss at its layer, ``forward.option_verify_loss``)."""
    store = track_video_tokens(model)
    weight, layer = aux
    hidden = track_layer(model, layer) if weight else {}
    checked = track_layer(model, verify[1], "option_verify_layer") if verify else {}
    lm_model = model.model.language_model if hasattr(model.model, "language_model") else model.model

    def step(batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        logits, labels, n = teacher_forward(model, batch, video_pad)
        lm = lm_loss(logits, labels)
        loss, parts = lm, {"lm": float(lm.detach())}
        if norm_weight:
            pen = video_scale_penalty(store["video"])
            loss, parts["video_pen"] = loss + norm_weight * pen, float(pen.detach())
        if weight:
            loss, parts = _add_aux(loss, parts, weight, *answer_aux_loss(hidden["layer"], lm_model.norm,
                                                                         model.lm_head, labels, batch.answer))
        if verify:
            loss, parts = _add_aux(loss, parts, verify[0], *option_verify_loss(
                checked["layer"], verify[2], lm_model.norm, batch.marks, n), name="verify")
        return loss, parts
    return step


def _add_aux(loss: torch.Tensor, parts: dict[str, float], weight: float, aux: torch.Tensor,
             acc: float, name: str = "aux") -> tuple[torch.Tensor, dict[str, float]]:
    if acc == acc:  # not nan: the batch has answers (captions and drill listings have none)
        parts = {**parts, name: float(aux.detach()), f"{name}_acc": acc}
    return loss + weight * aux, parts


def aux_setting(recipe: Recipe) -> tuple[float, int]:
    """(weight, layer) of the answer-content loss; (0, 0) when off. The layer must be a middle one."""
    if recipe.answer_aux_weight <= 0:
        return (0.0, 0)
    if not 1 <= recipe.answer_aux_layer < recipe.model.layers:
        raise ValueError(f"answer_aux_layer={recipe.answer_aux_layer}: pick 1 … {recipe.model.layers - 1} (a layer "
                         f"below the last of model.layers={recipe.model.layers}), or answer_aux_weight=0 to turn "
                         "the answer-content loss off")
    return (recipe.answer_aux_weight, recipe.answer_aux_layer)


def verify_setting(recipe: Recipe, device: torch.device) -> Optional[Verify]:
    """The option-verification loss's (weight, layer, a fresh probe on ``device``); None when off. The probe
    is a training aid only: it is not part of the checkpoint (each stage or round starts a new one)."""
    if recipe.option_verify_weight <= 0:
        return None
    k = recipe.option_verify_layer
    if not 1 <= k < recipe.model.layers:
        raise ValueError(f"option_verify_layer={k}: pick 1 … {recipe.model.layers - 1} (a layer below the last "
                         f"of model.layers={recipe.model.layers}), or option_verify_weight=0 to turn it off")
    return (recipe.option_verify_weight, k, torch.nn.Linear(recipe.model.hidden, 1).to(device))


def with_probe(params: Iterable[torch.nn.Parameter], verify: Optional[Verify]) -> list[torch.nn.Parameter]:
    """The model's parameters plus the verification probe's (trained alongside, never saved)."""
    return [*params, *(verify[2].parameters() if verify else ())]


def run_teacher(out: Path, data_dir: Path, recipe: Recipe, device: torch.device, log: Logger) -> Path:
    """Round 1 of the teacher: vision stage, binding drills, then ``recipe.teacher`` on video (``continue_teacher``
    runs the further rounds, one process — or one GPU lease — each)."""
    tokenizer = load_tokenizer(data_dir)
    data = training_set(data_dir, tokenizer, Path(data_dir) / "tokenizer", recipe, device)
    model = new_teacher(recipe, tokenizer, recipe.seed).to(device).train()
    batch_vision_attention(model)
    log(f"[teacher] Qwen2-VL {sum(p.numel() for p in model.parameters()):,} params; "
        f"{data.count('qa')} QA + {data.count('caption')} caption examples" + _stream_note(recipe))
    pad = token_ids(tokenizer).video_pad
    verify = verify_setting(recipe, device)
    try:
        vision = run_vision(model, recipe, device, log)
        hist = vision + run_binding(model, data, recipe, device, log, tokenizer, verify)
        if vision and not recipe.teacher_trains_vit:
            frozen = freeze_vit(model)
            log(f"[teacher] ViT frozen after the vision stage ({frozen:,} params; the merger trains)")
        hist += train(with_probe(model.parameters(), verify),
                      teacher_step(model, pad, recipe.video_norm_penalty, aux_setting(recipe), verify),
                      data, recipe.first_teacher_round(), device, recipe.seed, log, "teacher")
    finally:
        _close(data, log, "teacher")
    return _finish_teacher(model, data, device, log, Path(out), tokenizer, hist, "teacher")


class TrainSetupError(ValueError):
    """A stage cannot start from what is on disk (a missing earlier stage, data of another tokenizer)."""


def check_same_tokenizer(folder: Path, data_dir: Path) -> None:
    """The model's tokenizer must be the data's: the stream workers tokenise with the data's, the model reads ids."""
    model_tok, data_tok = Path(folder) / "tokenizer.json", Path(data_dir) / "tokenizer" / "tokenizer.json"
    if not model_tok.is_file():
        raise TrainSetupError(f"{folder}: no checkpoint with a tokenizer.json there — run the stage that writes it "
                              "first (teacher → convert → stage1 → stage2), or pass --out of a run that has it")
    if not data_tok.is_file():
        raise TrainSetupError(f"{data_dir}: no training data (tokenizer/tokenizer.json missing) — run "
                              "`python -m vamba_eval.train data --out DIR` first, or pass --data")
    if model_tok.read_bytes() != data_tok.read_bytes():
        raise TrainSetupError(f"{folder}'s tokenizer is not {data_dir}'s: train on the data its teacher was trained on "
                         "(same data recipe → same data and tokenizer; pass --data, or rebuild the data with the "
                         "teacher's recipe)")


def continue_teacher(out: Path, data_dir: Path, recipe: Recipe, device: torch.device, log: Logger) -> Path:
    """One more round of ``recipe.teacher`` on the saved ``OUT/teacher`` (ViT frozen as in round 1), saved back
    in place with its history extended. The letter composition leaves chance only after several thousand
    video steps (scripts/diagnostics/README.md, session 6): more than one GPU lease's worth."""
    folder = Path(out) / "teacher"
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder}: no teacher to continue; run the teacher stage first "
                                f"(python -m vamba_eval.train teacher --out {out})")
    check_same_tokenizer(folder, data_dir)
    tokenizer = load_tokenizer_from(folder)
    hist = json.loads((folder / "history.json").read_text(encoding="utf-8"))
    rounds = 1 + sum(1 for h in hist if str(h.get("stage", "")).startswith("teacher+") and "step" not in h)
    model = ckpt.load_qwen2vl(folder, device).train()
    batch_vision_attention(model)
    if not recipe.teacher_trains_vit:
        freeze_vit(model)
    data = training_set(data_dir, tokenizer, Path(data_dir) / "tokenizer", recipe, device)
    pad = token_ids(tokenizer).video_pad
    name = f"teacher+{rounds}"
    stage = dataclasses.replace(recipe.teacher, warmup=min(recipe.teacher.warmup, 20))
    verify = verify_setting(recipe, device)
    try:
        hist += train(with_probe(model.parameters(), verify),
                      teacher_step(model, pad, recipe.video_norm_penalty, aux_setting(recipe), verify),
                      data, stage, device, recipe.seed + rounds, log, name)
    finally:
        _close(data, log, name)
    return _finish_teacher(model, data, device, log, Path(out), tokenizer, hist, name)


def _finish_teacher(model: Any, data: TrainSet, device: torch.device, log: Logger, out: Path, tokenizer: Any,
                    hist: list[dict[str, Any]], name: str) -> Path:
    """Held-out lettered + open accuracy, then save ``OUT/teacher`` with its history."""
    pad = token_ids(tokenizer).video_pad
    model.eval()
    logits_fn = lambda b: teacher_forward(model, b, pad)[:2]  # noqa: E731
    hist.append({"stage": name, **validate(logits_fn, data, device),
                 **(validate(logits_fn, data, device, kind="open") if data.count("open", "val") else {}),
                 **{k: v for k, v in validate(logits_fn, data, device, split="train").items()
                    if k in ("train_first_token_acc", "train_lm")}})
    log(f"[{name}] held-out {hist[-1]}", **hist[-1])
    folder = ckpt.save_qwen2vl(model, out / "teacher", tokenizer)
    _write_history(folder, hist)
    return folder


def freeze_vit(model: Any) -> int:
    """Freeze the Qwen2-VL tower's patch embedding and blocks (not the merger); returns the frozen count."""
    visual = getattr(model.model, "visual", None) or model.visual
    frozen = 0
    for name, p in visual.named_parameters():
        if not name.startswith("merger."):
            p.requires_grad_(False)
            frozen += p.numel()
    return frozen


def run_binding(model: Any, data: TrainSet, recipe: Recipe, device: torch.device, log: Logger,
                tokenizer: Any, verify: Optional[Verify] = None) -> list[dict[str, Any]]:
    """The teacher's first phase: option-binding drills only, on a blank 1-token video (text answers).

    Letter binding sits on a loss plateau for ~2,000 steps × 128 (scripts/diagnostics/README.md); on a
    blank video a step costs a fraction of a video step, so the plateau is crossed before the video QA."""
    if recipe.binding.steps <= 0 or not data.count("drill"):
        return []
    video_pad = token_ids(tokenizer).video_pad
    text_only = BlankVideo(data, model.config.vision_config)
    # the blank clip carries nothing to learn: training the tower on it only inflates the merger's output
    # (the teacher then starts with a video-scale penalty of ~7 instead of ~0)
    # (frozen, not just left out of the optimiser: no backward through it, no stale .grad left for the teacher)
    visual = getattr(model.model, "visual", None) or model.visual
    flags = [(p, p.requires_grad) for p in visual.parameters()]
    visual.requires_grad_(False)
    try:
        hist = train(with_probe(model.parameters(), verify),
                     teacher_step(model, video_pad, aux=aux_setting(recipe), verify=verify), text_only,
                     recipe.binding, device, recipe.seed, log, "binding")
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    letters = torch.tensor(tokenizer.convert_tokens_to_ids(list("ABCDEFGHIJ")), device=device)
    model.eval()
    hist.append({"stage": "binding", **validate(lambda b: teacher_forward(model, b, video_pad)[:2], text_only,
                                                 device, kind="drill", letters=letters)})
    model.train()
    log(f"[binding] held-out drills {hist[-1]}", **hist[-1])
    return hist


def run_convert(out: Path, recipe: Recipe, log: Logger) -> Path:
    from vamba_eval.models.vamba.convert import VARIANTS, vamba_from_qwen2vl

    init, mixer = VARIANTS[recipe.variant]
    if not (Path(out) / "teacher" / "config.json").is_file():
        raise TrainSetupError(f"{Path(out) / 'teacher'}: no teacher checkpoint — run the `teacher` stage first, or "
                              "copy a trained tiny Qwen2-VL there (e.g. vamba_eval/checkpoints/qwen2vl-tiny)")
    teacher = ckpt.load_qwen2vl(Path(out) / "teacher")
    model = vamba_from_qwen2vl(teacher, cross_attn_init=init, mixer=mixer, seed=recipe.seed,
                               mixer_overrides=mixer_overrides(recipe.model), cross_attn_rope=recipe.cross_attn_rope)
    model.config = model.config.replace(distill_coeff=float(recipe.distill_lambda))
    log(f"[convert] variant {recipe.variant} (cross_attn_init={init}, mixer={mixer}, "
        f"cross_attn_rope={recipe.cross_attn_rope}): "
        f"{sum(p.numel() for p in model.parameters()):,} params")
    tokenizer = load_tokenizer_from(Path(out) / "teacher")
    return ckpt.save_vamba(model, Path(out) / "converted", tokenizer)


def load_tokenizer_from(folder: Path) -> Any:
    from vamba_eval.models.tokenizer import load_tokenizer as load

    return load(folder)


def set_trainable(model: torch.nn.Module, stage: str) -> list[str]:
    """Freeze per stage; returns the names left trainable."""
    names = []
    for name, p in model.named_parameters():
        if stage == "stage1":
            p.requires_grad_(any(key in name or name.endswith(key) for key in STAGE1_KEYS))
        elif stage == "stage2":
            p.requires_grad_(not name.startswith(STAGE2_FROZEN))
        else:
            raise ValueError(f"unknown stage {stage!r}")
        if p.requires_grad:
            names.append(name)
    return names


def student_step(model: Any, teacher: Optional[Any], lam: float, topk: int, video_pad: int,
                 norm_weight: float = 0.0, aux: tuple[float, int] = (0.0, 0), verify: Optional[Verify] = None):
    """LM loss, plus λ·top-k KL to the teacher when λ > 0 (λ = 0 is exactly the LM loss), plus the
    video-scale penalty when the merger trains (``norm_weight`` > 0), plus the answer-content and
    option-verification losses (``aux`` = (weight, layer), ``verify``: as the teacher's)."""
    weight, layer = aux

    def step(batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        stats: dict[str, torch.Tensor] = {}
        logits = student_logits(model, batch, stats, keep_layer=layer if weight else 0)
        lm = lm_loss(logits, batch.labels)
        loss, parts = lm, {"lm": float(lm.detach())}
        if norm_weight:
            pen = video_scale_penalty(stats["video"])
            loss, parts["video_pen"] = loss + norm_weight * pen, float(pen.detach())
        if weight:
            loss, parts = _add_aux(loss, parts, weight, *answer_aux_loss(stats["layer"], model.model.norm,
                                                                         model.lm_head, batch.labels, batch.answer))
        if verify:
            loss, parts = _add_aux(loss, parts, verify[0], *option_verify_loss(
                stats[f"layer{verify[1]}"], verify[2], model.model.norm, batch.marks), name="verify")
        if teacher is None or lam == 0:
            return loss, parts
        with torch.no_grad():
            t_logits, _, n = teacher_forward(teacher, batch, video_pad)
        kl = aligned_kl(logits, t_logits, batch.labels, n, topk)
        return loss + lam * kl, {**parts, "kl": float(kl.detach())}
    return step


def run_student(out: Path, data_dir: Path, recipe: Recipe, device: torch.device, log: Logger,
                stage: str) -> Path:
    """stage1 (from ``converted``) or stage2 (from ``stage1``)."""
    src = Path(out) / ("converted" if stage == "stage1" else "stage1")
    check_same_tokenizer(src, data_dir)
    tokenizer = load_tokenizer_from(src)
    model = ckpt.load_vamba(src, device).train()
    names = set_trainable(model, stage)
    teacher = None
    lam = recipe.distill_lambda if stage == "stage1" else 0.0
    if lam > 0:
        teacher = ckpt.load_qwen2vl(Path(out) / "teacher", device).eval().requires_grad_(False)
        batch_vision_attention(teacher)
    data = training_set(data_dir, tokenizer, Path(data_dir) / "tokenizer", recipe, device)
    n_train = sum(p.numel() for n, p in model.named_parameters() if n in set(names))
    log(f"[{stage}] training {len(names)} tensors ({n_train:,} params); λ={lam}" + _stream_note(recipe))
    norm_weight = recipe.video_norm_penalty if stage == "stage2" else 0.0  # stage 1 does not train the merger
    # the answer-content loss in stage 2 only: stage 1 trains on captions (no answers) and λ = 0 must stay the LM loss
    aux = aux_setting(recipe) if stage == "stage2" else (0.0, 0)
    verify = verify_setting(recipe, device) if stage == "stage2" else None
    step = student_step(model, teacher, lam, recipe.distill_topk, token_ids(tokenizer).video_pad, norm_weight, aux,
                        verify)
    settings = recipe.stage1 if stage == "stage1" else recipe.stage2
    before = {"stage": f"{stage}:before", **_validate_student(model, data, device)}
    log(f"[{stage}] held-out before {before}", **before)
    try:
        hist = [before] + train(with_probe(model.parameters(), verify), step, data, settings, device, recipe.seed,
                                log, stage)
    finally:
        _close(data, log, stage)
    hist.append({"stage": stage, **_validate_student(model, data, device)})
    log(f"[{stage}] held-out after {hist[-1]}", **hist[-1])
    folder = ckpt.save_vamba(model.eval(), Path(out) / stage, tokenizer)
    _write_history(folder, hist)
    return folder


def _validate_student(model: Any, data: TrainSet, device: torch.device) -> dict[str, float]:
    was = model.training
    model.eval()
    try:
        return validate(lambda b: (student_logits(model, b), b.labels), data, device)
    finally:
        model.train(was)


def _stream_note(recipe: Recipe) -> str:
    n = recipe.data.stream_workers
    return f"; + fresh releases from {n} stream workers" if n > 0 else ""


def _close(data: TrainSet, log: Logger, stage: str) -> None:
    if isinstance(data, StreamSet):
        data.close()
        log(f"[{stage}] stream: {data.produced:,} fresh examples produced", stream_examples=data.produced)


def _write_history(folder: Path, hist: list[dict[str, Any]]) -> None:
    (Path(folder) / "history.json").write_text(json.dumps(hist, indent=1) + "\n", encoding="utf-8")
