"""The vision pre-training stage (vamba_eval.train.vision): frame labels from scripts, labelled frame
pairs, the heads' losses and accuracies, ``run_vision`` on a tiny teacher (it must learn backgrounds),
and how the stage sits in ``run_teacher`` (ViT frozen after it, untouched by the binding drills)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vamba_eval.synth.render import render_frame
from vamba_eval.synth.world import (COLOR_NAMES, COLORS, DIGITS, SHAPE_KINDS, WORDS, Event, Scene, Shape,
                                    VideoScript, random_script)
from vamba_eval.train.data import yuv420
from vamba_eval.train.loop import Logger
from vamba_eval.train.recipe import ModelRecipe, StageRecipe, preset
from vamba_eval.train.stages import freeze_vit, new_teacher, run_binding, run_teacher
from vamba_eval.train.tokenizer import train_bpe
from train_data import write_releases  # tests/train_data.py
from vamba_eval.train.vision import (CLASSES, MAX_TICKS, N_LABELS, PAIRS_PER_JOB, SHAPE_PAIRS, TEXTS, VISION_SEED0,
                                     build_pairs, frame_labels, frame_size, head_accuracy, head_losses, render_pairs,
                                     run_vision)

CPU = torch.device("cpu")
WIDTH = sum(c for _, c in CLASSES) + len(SHAPE_PAIRS)  # logits per slot
NAMES = ("background", "text", "count", "ticks", "shapes")


def bit(color: str, kind: str) -> int:
    """Label column of the (colour, kind) shape bit: after the 4 attributes, colour-major."""
    return 4 + 3 * COLOR_NAMES.index(color) + SHAPE_KINDS.index(kind)


def visual_of(model):
    return getattr(model.model, "visual", None) or model.visual


def visual_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in visual_of(model).named_parameters()}


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_tok():
    """A tiny BPE (only its size and special-token ids matter to a vision-only teacher)."""
    return train_bpe(["the background is red and the number 7 is shown.", "A. B. C. D. the red circle"], 300)


@pytest.fixture(scope="module")
def binding_data(tmp_path_factory):
    """The data of tests/test_train_binding.py (lvbench + mlvu releases with 2 drills per QA), written as
    a data folder with its tokenizer so ``run_teacher`` can read it too."""
    from vamba_eval.train.batches import TrainSet

    folder = tmp_path_factory.mktemp("vision") / "data"
    _, tok = write_releases(folder, ("lvbench", "mlvu"), 1001, drills=2)
    tok.save_pretrained(str(folder / "tokenizer"))
    return {"folder": folder, "tok": tok, "data": TrainSet(folder, tok, holdout_every=2)}


# --- 1. frame labels ------------------------------------------------------------------------------
def hand_script() -> VideoScript:
    """Scene A (0–10 s, blue, "7"): a red circle that turns white at 6 s, a green square that appears at
    4 s, six ticks (2, 3, 5, 7, 8, 9 s). Scene B (10–20 s, yellow, "CAT"): a magenta triangle."""
    a = Scene(0, 10, "blue", "7",
              (Shape("circle", "red", 0.2, 0.3, 0.1, 0.0), Shape("square", "green", 0.5, 0.5, 0.0, 0.1)),
              tuple(sorted([Event(4, "appear", 1), Event(6, "recolor", 0, "white")]
                           + [Event(s, "tick") for s in (2, 3, 5, 7, 8, 9)], key=lambda e: (e.time_s, e.kind))))
    b = Scene(10, 20, "yellow", "CAT", (Shape("triangle", "magenta", 0.5, 0.5, 0.1, 0.1),))
    return VideoScript(20, (a, b))


def test_label_layout():
    assert TEXTS == DIGITS + WORDS and len(TEXTS) == 18
    assert [n for n, _ in CLASSES] == ["background", "text", "count", "ticks"]
    assert dict(CLASSES) == {"background": 8, "text": 18, "count": 4, "ticks": MAX_TICKS + 1}
    assert N_LABELS == 4 + len(COLOR_NAMES) * len(SHAPE_KINDS) == 28
    assert all(4 + SHAPE_PAIRS.index((c, k)) == bit(c, k) for c in COLOR_NAMES for k in SHAPE_KINDS)


@pytest.mark.parametrize("t,background,text,count,ticks,shapes", [
    (1.0, 2, 7, 1, 0, {("red", "circle")}),                          # blue = 2, "7" = 7; the square not yet
    (2.5, 2, 7, 1, 1, {("red", "circle")}),                          # first tick
    (3.99, 2, 7, 1, 2, {("red", "circle")}),                         # just before the appear event
    (4.0, 2, 7, 2, 2, {("red", "circle"), ("green", "square")}),     # the square appears at 4 s
    (5.99, 2, 7, 2, 3, {("red", "circle"), ("green", "square")}),    # before the recolor
    (6.0, 2, 7, 2, 3, {("white", "circle"), ("green", "square")}),   # the circle is white from 6 s
    (8.5, 2, 7, 2, 4, {("white", "circle"), ("green", "square")}),   # 5 ticks so far → clamped at 4
    (9.99, 2, 7, 2, 4, {("white", "circle"), ("green", "square")}),  # 6 ticks → 4; still scene A
    (10.0, 3, 11, 1, 0, {("magenta", "triangle")}),                  # scene B: yellow = 3, "CAT" = 10 + 1
    (25.0, 3, 11, 1, 0, {("magenta", "triangle")}),                  # past the end: the last scene
])
def test_frame_labels_of_a_hand_built_script(t, background, text, count, ticks, shapes):
    script = hand_script()
    assert script.scenes[0].ticks_at(9.99) == 6 > MAX_TICKS  # the clamp is exercised
    got = frame_labels(script, t)
    assert got.dtype == np.int16 and got.shape == (N_LABELS,)
    assert got[:4].tolist() == [background, text, count, ticks]
    want_bits = np.zeros(len(SHAPE_PAIRS), dtype=np.int16)
    for c, k in shapes:
        want_bits[bit(c, k) - 4] = 1
    assert got[4:].tolist() == want_bits.tolist()
    assert int(got[4:].sum()) == got[2]  # one bit per visible shape


# --- 2. render_pairs ------------------------------------------------------------------------------
def replay(seed: int, n: int):
    """render_pairs' rng draws, replayed: the scripts and the two times of every pair."""
    rng = np.random.default_rng([seed, 29])
    out = []
    for _ in range(n):
        script = random_script(rng, int(rng.integers(4, 25)) * 5)
        d = script.duration_s
        t1 = float(rng.uniform(0, d))
        gap = float(rng.uniform(0, 2)) if rng.random() < 0.5 else float(rng.uniform(0, d / 3))
        out.append((script, (t1, min(d - 0.01, t1 + gap))))
    return out


@pytest.fixture(scope="module")
def pairs12():
    return render_pairs(VISION_SEED0 + 7, 12)


def test_render_pairs_shapes_and_determinism(pairs12):
    frames, labels = pairs12
    w, h = frame_size()
    assert (w, h) == (168, 84)
    assert frames.shape == (12, 2, h, w, 3) and frames.dtype == np.uint8
    assert labels.shape == (12, 2, N_LABELS) and labels.dtype == np.int16
    again = render_pairs(VISION_SEED0 + 7, 12)
    assert np.array_equal(again[0], frames) and np.array_equal(again[1], labels)
    other = render_pairs(VISION_SEED0 + 8, 12)
    assert not np.array_equal(other[0], frames)
    for col, (_, classes) in enumerate(CLASSES):
        assert labels[..., col].min() >= 0 and labels[..., col].max() < classes
    assert set(np.unique(labels[..., 4:]).tolist()) <= {0, 1}
    assert np.array_equal(labels[..., 4:].sum(-1), labels[..., 2])  # shape bits = visible count


def test_render_pairs_labels_are_the_scripts_labels_and_frames_their_renders(pairs12):
    from vamba_eval.video.decode import _resize

    frames, labels = pairs12
    size = frame_size()
    ordered = 0
    for k, (script, times) in enumerate(replay(VISION_SEED0 + 7, 12)):
        assert times[0] <= times[1] < script.duration_s
        ordered += times[1] > times[0]
        for j, t in enumerate(times):
            assert np.array_equal(labels[k, j], frame_labels(script, t)), (k, j)
            assert np.array_equal(frames[k, j], _resize(yuv420(render_frame(script, t)), size)), (k, j)
    assert ordered == 12


def test_render_pairs_corners_show_the_labelled_background(pairs12):
    """Independent of the replay: the margin (so the corners) is pure background (render.py), blurred by
    the yuv420 round trip and the resize only slightly; both frames of a pair, in their own order."""
    frames, labels = pairs12
    palette = np.array([COLORS[c] for c in COLOR_NAMES], dtype=np.int16)  # [8, 3]
    corners = frames[:, :, [0, 0, -1, -1], [0, -1, 0, -1]].astype(np.int16)  # [n, 2, 4, 3]
    want = palette[labels[..., 0]][:, :, None]  # [n, 2, 1, 3]
    assert int(np.abs(corners - want).max()) <= 8
    # the corner colour identifies the labelled background (nearest palette entry)
    nearest = np.abs(corners[:, :, :, None] - palette[None, None, None]).sum(-1).argmin(-1)  # [n, 2, 4]
    assert np.array_equal(nearest, np.repeat(labels[..., :1], 4, axis=-1))


# --- 3. build_pairs -------------------------------------------------------------------------------
def test_build_pairs_counts_and_is_deterministic():
    frames, labels = build_pairs(5, 3, workers=1)
    assert frames.shape[:2] == (5, 2) and labels.shape == (5, 2, N_LABELS)
    again = build_pairs(5, 3, workers=1)
    assert np.array_equal(again[0], frames) and np.array_equal(again[1], labels)
    ref = render_pairs(VISION_SEED0 + 3 * 100_000, 5)  # job 0 of seed 3
    assert np.array_equal(ref[0], frames) and np.array_equal(ref[1], labels)
    assert not np.array_equal(build_pairs(5, 4, workers=1)[0], frames)


def test_build_pairs_spans_jobs():
    frames, labels = build_pairs(PAIRS_PER_JOB + 2, 1, workers=1)
    assert len(frames) == len(labels) == PAIRS_PER_JOB + 2
    tail = render_pairs(VISION_SEED0 + 100_000 + 1, 2)  # job 1 of seed 1: the last 2 pairs
    assert np.array_equal(frames[-2:], tail[0]) and np.array_equal(labels[-2:], tail[1])


# --- 4. head losses and accuracies -----------------------------------------------------------------
def random_labels(b: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cols = [torch.randint(0, c, (b, 2, 1), generator=g) for _, c in CLASSES]
    bits = torch.randint(0, 2, (b, 2, len(SHAPE_PAIRS)), generator=g)
    return torch.cat([*cols, bits], dim=-1)


def oracle_logits(labels: torch.Tensor, margin: float = 30.0) -> list[torch.Tensor]:
    """Per slot: +margin on the gold class of each attribute (−margin elsewhere), ±margin on the bits."""
    out = []
    for slot in range(2):
        parts = [F.one_hot(labels[:, slot, col], c).float() * 2 * margin - margin
                 for col, (_, c) in enumerate(CLASSES)]
        parts.append(labels[:, slot, len(CLASSES):].float() * 2 * margin - margin)
        out.append(torch.cat(parts, dim=-1))
    assert out[0].shape[-1] == WIDTH
    return out


def test_head_losses_near_zero_on_the_gold_and_accuracy_counts_every_hit():
    labels = random_labels(6)
    logits = oracle_logits(labels)
    total, parts = head_losses(logits, labels)
    assert set(parts) == set(NAMES)
    assert float(total) < 1e-6 and all(v < 1e-6 for v in parts.values())
    hits = head_accuracy(logits, labels)
    assert set(hits) == set(NAMES)
    assert all(int(v) == 2 * 6 for v in hits.values())  # both slots of all 6 pairs


def test_head_losses_positive_and_accuracy_zero_on_wrong_logits():
    labels = random_labels(6, seed=1)
    wrong = []
    for lg in oracle_logits(labels):
        at, segs = 0, []
        for _, c in CLASSES:
            segs.append(lg[:, at:at + c].roll(1, dims=-1))  # gold moved to another class
            at += c
        segs.append(-lg[:, at:])  # every bit the wrong sign
        wrong.append(torch.cat(segs, dim=-1))
    total, parts = head_losses(wrong, labels)
    assert float(total) > 100 and all(v > 10 for v in parts.values())
    assert all(int(v) == 0 for v in head_accuracy(wrong, labels).values())
    # one slot's background wrong, the rest right: half the background hits
    mixed = oracle_logits(labels)
    mixed[1] = torch.cat([wrong[1][:, :8], mixed[1][:, 8:]], dim=-1)
    hits = head_accuracy(mixed, labels)
    assert int(hits["background"]) == 6 and int(hits["text"]) == 12 and int(hits["shapes"]) == 12


def test_shape_bits_term_is_bce_weighted_like_the_attributes():
    labels = random_labels(5, seed=2)
    logits = oracle_logits(labels)
    g = torch.Generator().manual_seed(3)
    bit_logits = [torch.randn(5, len(SHAPE_PAIRS), generator=g) for _ in range(2)]
    mixed = [torch.cat([lg[:, :WIDTH - len(SHAPE_PAIRS)], b], dim=-1) for lg, b in zip(logits, bit_logits)]
    total, parts = head_losses(mixed, labels)
    bce = [F.binary_cross_entropy_with_logits(b, labels[:, s, 4:].float()) for s, b in enumerate(bit_logits)]
    assert parts["shapes"] == pytest.approx(float(sum(bce)) / 2, rel=1e-5)  # the mean over the 2 slots
    assert float(total) == pytest.approx(len(CLASSES) * float(sum(bce)), rel=1e-5)  # attributes ~0 here
    # zero logits: ln 2 per bit
    zeros = [torch.cat([lg[:, :WIDTH - len(SHAPE_PAIRS)], torch.zeros(5, len(SHAPE_PAIRS))], -1) for lg in logits]
    total0, parts0 = head_losses(zeros, labels)
    assert parts0["shapes"] == pytest.approx(np.log(2), rel=1e-5)
    assert float(total0) == pytest.approx(2 * len(CLASSES) * np.log(2), rel=1e-5)


# --- 5. run_vision on a tiny teacher ---------------------------------------------------------------
def test_run_vision_trains_the_tower_only_and_reports_held_out_accuracy(small_tok):
    recipe = preset("test")
    recipe.data.vision_pairs = 24
    recipe.vision = StageRecipe(steps=3, lr=3e-3, batch=4, warmup=0)
    model = new_teacher(recipe, small_tok, 0).train()
    keys = set(model.state_dict())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    hist = run_vision(model, recipe, CPU, Logger(None))
    steps = [h for h in hist if "step" in h]
    assert [h["step"] for h in steps][-1] == 3 and all(h["stage"] == "vision" for h in hist)
    assert all(np.isfinite(h["loss"]) and set(NAMES) <= set(h) for h in steps)
    last = hist[-1]
    assert {f"vision_val_{k}_acc" for k in NAMES} <= set(last)
    assert all(0.0 <= last[f"vision_val_{k}_acc"] <= 1.0 for k in NAMES)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    for part in ("visual.patch_embed.", "visual.blocks.", "visual.merger."):
        assert any(part in n for n in changed), f"nothing in {part} changed"
    assert all(".visual." in n for n in changed), "the vision stage touched the language model"
    assert set(model.state_dict()) == keys  # the heads are dropped: not in the checkpoint
    assert not any(".slots." in k for k in keys)
    # no stage when there are no steps or no pairs
    recipe.vision = StageRecipe(steps=0, lr=3e-3)
    assert run_vision(model, recipe, CPU, Logger(None)) == []
    recipe.vision = StageRecipe(steps=2, lr=3e-3, batch=4, warmup=0)
    recipe.data.vision_pairs = 0
    assert run_vision(model, recipe, CPU, Logger(None)) == []
    # a handful of pairs still holds one out (the accuracies are reported), one pair is refused
    recipe.data.vision_pairs = 5
    assert {f"vision_val_{k}_acc" for k in NAMES} <= set(run_vision(model, recipe, CPU, Logger(None))[-1])
    recipe.data.vision_pairs = 1
    with pytest.raises(ValueError, match="raise data.vision_pairs"):
        run_vision(model, recipe, CPU, Logger(None))


# --- 6. the tower learns backgrounds -----------------------------------------------------------------
LEARN_MODEL = ModelRecipe(hidden=32, layers=1, intermediate=64, vision_embed=32, vision_depth=1, vision_heads=2)
LEARN_STAGE = StageRecipe(steps=200, lr=3e-3, batch=16, warmup=10)
LEARN_PAIRS = 600  # 75 held out (150 frames)


def test_vision_stage_learns_backgrounds_held_out(small_tok):
    """Measured on 2 CPU cores (hidden 32, ViT 32 wide × 1 block, 200 steps × 16, 600 pairs), ~6 s each:
    held-out background accuracy 0.97 / 0.96 / 0.93 / 0.91 / 0.93 / 0.99 for recipe seeds 0–5 (chance
    ~0.125; 100 steps gave 0.85–0.95). Text, count and shapes stay near their base rates at this size."""
    from vamba_eval.train.forward import batch_vision_attention

    recipe = preset("test")
    recipe.seed = 0
    recipe.model = LEARN_MODEL
    recipe.data.vision_pairs = LEARN_PAIRS
    recipe.vision = LEARN_STAGE
    model = new_teacher(recipe, small_tok, 0).train()
    batch_vision_attention(model)  # as run_teacher does
    hist = run_vision(model, recipe, CPU, Logger(None))
    steps = [h for h in hist if "step" in h]
    assert steps[-1]["background"] < 0.5 * steps[0]["background"]
    assert hist[-1]["vision_val_background_acc"] >= 0.8, hist[-1]


# --- 7. the stage inside the teacher's training ----------------------------------------------------
def test_freeze_vit_after_vision_and_binding_leaves_the_tower_alone(small_tok, binding_data):
    from vamba_eval.train.batches import token_ids
    from vamba_eval.train.loop import train
    from vamba_eval.train.stages import teacher_step

    tok, data = binding_data["tok"], binding_data["data"]
    recipe = preset("test")
    recipe.vision = StageRecipe(steps=2, lr=3e-3, batch=4, warmup=0)
    recipe.binding = StageRecipe(steps=3, lr=3e-3, batch=4, warmup=0, drill_fraction=1.0)
    model = new_teacher(recipe, tok, 0).train()
    run_vision(model, recipe, CPU, Logger(None))
    after_vision = visual_state(model)
    rest = {n: p.detach().clone() for n, p in model.named_parameters() if ".visual." not in n}

    hist = run_binding(model, data, recipe, CPU, Logger(None), tok)
    assert hist and hist[-1]["stage"] == "binding"
    for n, p in visual_of(model).named_parameters():
        assert torch.equal(p, after_vision[n]), f"visual.{n} changed in the binding stage"
    assert any(not torch.equal(p, rest[n]) for n, p in model.named_parameters() if n in rest)

    visual = visual_of(model)
    frozen = freeze_vit(model)
    assert frozen == sum(p.numel() for n, p in visual.named_parameters() if not n.startswith("merger."))
    for n, p in visual.named_parameters():
        assert p.requires_grad == n.startswith("merger."), n
    assert any(n.startswith("patch_embed.") for n, _ in visual.named_parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if ".visual." not in n)

    # a teacher step after the freeze: patch_embed / blocks stay, the merger moves
    before = visual_state(model)
    train(model.parameters(), teacher_step(model, token_ids(tok).video_pad, recipe.video_norm_penalty), data,
          StageRecipe(steps=2, lr=1e-2, batch=4, warmup=0), CPU, 0, Logger(None), "teacher")
    for n, p in visual.named_parameters():
        if not n.startswith("merger."):
            assert torch.equal(p, before[n]), f"frozen visual.{n} changed"
    assert any(not torch.equal(p, before[n]) for n, p in visual.named_parameters() if n.startswith("merger."))


def test_run_binding_leaves_no_gradient_on_the_tower(binding_data):
    tok = binding_data["tok"]
    recipe = preset("test")
    model = new_teacher(recipe, tok, 0).train()
    run_binding(model, binding_data["data"], recipe, CPU, Logger(None), tok)
    assert all(p.grad is None or not p.grad.any() for p in visual_of(model).parameters())


@pytest.mark.parametrize("trains_vit", [False, True])
def test_run_teacher_freezes_the_tower_after_the_vision_stage(binding_data, tmp_path, trains_vit):
    """run_teacher end to end: the saved ViT (patch_embed, blocks) is exactly the tower after the vision stage
    (replayed: same seed, same pairs) — binding and the teacher's video training left it alone — while the
    merger went on training; with ``teacher_trains_vit`` the tower trains on."""
    from safetensors.torch import load_file

    from vamba_eval.models.vamba.convert import _official_key
    from vamba_eval.train.forward import batch_vision_attention
    from vamba_eval.train.stages import load_tokenizer

    folder = binding_data["folder"]
    recipe = preset("test")
    recipe.teacher_trains_vit = trains_vit
    recipe.vision = StageRecipe(steps=3, lr=3e-3, batch=4, warmup=0)
    recipe.binding = StageRecipe(steps=2, lr=3e-3, batch=4, warmup=0, drill_fraction=1.0)
    recipe.teacher = StageRecipe(steps=2, lr=1e-2, batch=4, warmup=0, caption_fraction=0.3)
    out = run_teacher(tmp_path, folder, recipe, CPU, Logger(None))
    stages = [h["stage"] for h in json.loads((out / "history.json").read_text())]
    assert stages[0] == "vision" and stages.index("binding") < stages.index("teacher")
    assert stages[stages.index("binding") - 1] == "vision"
    saved = load_file(str(out / "model.safetensors"))

    ref = new_teacher(recipe, load_tokenizer(folder), recipe.seed).train()  # run_teacher's model, replayed
    batch_vision_attention(ref)
    start = {_official_key("model.visual." + n): p.detach().clone() for n, p in visual_of(ref).named_parameters()}
    run_vision(ref, recipe, CPU, Logger(None))
    tower = {_official_key("model.visual." + n): p.detach() for n, p in visual_of(ref).named_parameters()}
    assert set(tower) <= set(saved) and all(k.startswith("visual.") for k in tower)
    vit = [k for k in tower if not k.startswith("visual.merger.")]
    merger = [k for k in tower if k.startswith("visual.merger.")]
    assert vit and merger
    assert any(not torch.equal(tower[k], start[k]) for k in vit)  # the vision stage did train the tower
    assert any(not torch.equal(saved[k], tower[k]) for k in merger)  # the merger trained on afterwards
    same = [torch.equal(saved[k], tower[k]) for k in vit]
    if trains_vit:
        assert not all(same)
    else:
        assert all(same), [k for k, s in zip(vit, same) if not s]
