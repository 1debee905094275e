"""Small-scale training (vamba_eval.train): stage steps, the distillation loss, freezing, the CLI,
and the bundled trained checkpoints."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import pytest
import torch

from vamba_eval.train import ckpt
from vamba_eval.train.batches import IGNORE, TrainSet, token_ids
from vamba_eval.train.forward import aligned_kl, lm_loss, student_logits, teacher_forward, topk_kl
from vamba_eval.train.recipe import preset
from vamba_eval.train.stages import STAGE1_KEYS, set_trainable, student_step, teacher_step
from train_data import teacher_and_student, write_releases  # tests/train_data.py

PACKAGE_CKPTS = Path(__file__).resolve().parent.parent / "vamba_eval" / "checkpoints"
MAX_CKPT_BYTES = 12 * 2**20  # "a few MB"


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """One lvbench training release (seed 1000), its tokenizer, a tiny teacher and its VAMBA variant D."""
    folder = tmp_path_factory.mktemp("train") / "data"
    _, tok = write_releases(folder, ("lvbench",), 1000, copies=1, fast=False, vocab=400)
    data = TrainSet(folder, tok, holdout_every=0)
    _, teacher, student = teacher_and_student(tok)
    qa = [i for i, e in enumerate(data.examples) if e["kind"] == "qa"][:4]
    return {"tok": tok, "data": data, "teacher": teacher, "student": student, "batch": data.collate(qa)}


def one_step(model, step_fn, batch, lr=3e-3):
    """Loss on ``batch``, one AdamW step on the trainable parameters, loss again."""
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    before, _ = step_fn(batch)
    before.backward()
    opt.step()
    with torch.no_grad():
        after, _ = step_fn(batch)
    return float(before.detach()), float(after)


# --- each stage learns ----------------------------------------------------------------------------
def test_teacher_step_decreases_loss(setup):
    teacher = copy.deepcopy(setup["teacher"])
    before, after = one_step(teacher, teacher_step(teacher, token_ids(setup["tok"]).video_pad), setup["batch"])
    assert after < before


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_student_step_decreases_loss(setup, stage):
    student = copy.deepcopy(setup["student"])
    set_trainable(student, stage)
    step = student_step(student, None, 0.0, 100, token_ids(setup["tok"]).video_pad)
    before, after = one_step(student, step, setup["batch"])
    assert after < before


def test_stage1_with_distillation_decreases_loss(setup):
    student = copy.deepcopy(setup["student"])
    set_trainable(student, "stage1")
    teacher = copy.deepcopy(setup["teacher"]).eval().requires_grad_(False)
    step = student_step(student, teacher, 1.0, 100, token_ids(setup["tok"]).video_pad)
    _, parts = step(setup["batch"])
    assert parts["kl"] > 0
    before, after = one_step(student, step, setup["batch"])
    assert after < before


# --- freezing -------------------------------------------------------------------------------------
def test_stage1_updates_only_cross_attn_mixers_alpha(setup):
    student = copy.deepcopy(setup["student"])
    trainable = set_trainable(student, "stage1")
    assert trainable and all(any(k in n for k in STAGE1_KEYS) for n in trainable)
    assert any(".cross_attn." in n for n in trainable) and any(".vision_mixer." in n for n in trainable)
    assert any(n.endswith(".alpha") for n in trainable)
    start = {n: p.detach().clone() for n, p in student.named_parameters()}
    one_step(student, student_step(student, None, 0.0, 100, 0), setup["batch"], lr=1e-2)
    for name, p in student.named_parameters():
        if name in trainable:
            continue
        assert torch.equal(p, start[name]), f"{name} changed in stage 1"
    assert any(not torch.equal(p, start[n]) for n, p in student.named_parameters() if n in trainable)


def test_stage2_freezes_vit_and_lm_head(setup):
    student = copy.deepcopy(setup["student"])
    trainable = set(set_trainable(student, "stage2"))
    assert not any(n.startswith(("visual.blocks.", "visual.patch_embed.", "lm_head.")) for n in trainable)
    assert any(n.startswith("visual.merger.") for n in trainable)
    assert any(n.startswith("model.layers.") for n in trainable)


# --- losses ---------------------------------------------------------------------------------------
def test_kl_zero_for_identical_logits_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(6, 300, generator=g)
    assert float(topk_kl(t.clone(), t, 100)) == 0.0
    assert float(topk_kl(t + 0.5 * torch.randn(6, 300, generator=g), t, 100)) > 0


def test_kl_equals_hand_computation():
    teacher = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    student = torch.tensor([[0.5, 1.5, 3.0, 0.0]])
    # top-2 of the teacher: ids 0, 1; both renormalised over {0, 1}
    p = torch.softmax(torch.tensor([2.0, 1.0]), 0)
    q = torch.softmax(torch.tensor([0.5, 1.5]), 0)
    hand = float((p * (p.log() - q.log())).sum())
    assert float(topk_kl(student, teacher, 2)) == pytest.approx(hand, rel=1e-6)
    assert float(topk_kl(student, teacher, 100)) > 0  # k larger than the vocabulary: the whole vocabulary


def test_aligned_kl_zero_when_student_equals_teacher(setup):
    """Student position q is teacher position q + N: the same logits shifted by N give 0."""
    batch, n = setup["batch"], 7
    s = torch.randn(batch.ids.shape[0], batch.ids.shape[1], 50)
    t = torch.cat([torch.randn(s.shape[0], n, 50), s], dim=1)
    assert float(aligned_kl(s, t, batch.labels, n, 100)) == 0.0
    assert float(aligned_kl(s, torch.roll(t, 1, dims=-1), batch.labels, n, 100)) > 0


def test_lambda_zero_is_plain_lm_loss(setup):
    student, batch = setup["student"].eval(), setup["batch"]
    teacher = setup["teacher"].eval()
    with torch.no_grad():
        lm = lm_loss(student_logits(student, batch), batch.labels)
        loss0, _ = student_step(student, teacher, 0.0, 100, token_ids(setup["tok"]).video_pad)(batch)
    assert float(loss0) == float(lm)


@pytest.mark.parametrize("rope", [False, True])
def test_batched_student_equals_reference_forward(setup, rope):
    """Also with M-RoPE on the cross-attention: the batched forward must give each video's keys their
    own (t, h, w) positions, as the reference forward and the streamed prefill do."""
    from vamba_eval.models.vamba.convert import vamba_from_qwen2vl

    batch = setup["batch"]
    student = setup["student"].eval()
    if rope:
        student = vamba_from_qwen2vl(setup["teacher"], "self_attn", "mamba2", 0, cross_attn_rope=True).eval()
        assert student.config.vamba.cross_attn_use_position_embeddings
    with torch.no_grad():
        logits = student_logits(student, batch)
        for row in range(batch.ids.shape[0]):
            n = int(batch.mask[row].sum())
            ref = student(batch.ids[row:row + 1, :n], batch.frames[row])
            torch.testing.assert_close(logits[row, :n], ref[0], rtol=1e-4, atol=1e-5)


def test_teacher_labels_line_up_with_student(setup):
    with torch.no_grad():
        _, labels_t, n = teacher_forward(setup["teacher"].eval(), setup["batch"], token_ids(setup["tok"]).video_pad)
    lab = setup["batch"].labels
    assert torch.equal(labels_t[:, n:n + lab.shape[1]][lab != IGNORE], lab[lab != IGNORE])


def test_vectorised_inputs_and_rope_ids_equal_transformers(setup):
    """teacher_inputs / teacher_position_ids against a per-row construction and transformers' own
    M-RoPE (rows of different lengths, padding; the batch mixes prompts of several lengths)."""
    from vamba_eval.train.batches import teacher_inputs, teacher_position_ids

    data, teacher = setup["data"], setup["teacher"]
    pad = token_ids(setup["tok"]).video_pad
    qa = [i for i, e in enumerate(data.examples) if e["kind"] == "qa"]
    batch = data.collate([qa[0], qa[5], qa[-1], [i for i, e in enumerate(data.examples) if e["kind"] == "caption"][0]])
    n = 7
    ids, mask, labels = teacher_inputs(batch, n, pad)
    for row, start in enumerate(batch.vision_start):
        cut = start + 1
        assert torch.equal(ids[row], torch.cat([batch.ids[row, :cut], torch.full((n,), pad), batch.ids[row, cut:]]))
        assert torch.equal(mask[row], torch.cat([batch.mask[row, :cut], torch.ones(n, dtype=mask.dtype),
                                                 batch.mask[row, cut:]]))
        assert torch.equal(labels[row], torch.cat([batch.labels[row, :cut], torch.full((n,), IGNORE),
                                                   batch.labels[row, cut:]]))
    vcfg = teacher.config.vision_config
    t, h, w = batch.frames.shape[1:4]
    grid = (t // 2, h // vcfg.patch_size, w // vcfg.patch_size)
    n = grid[0] * grid[1] * grid[2] // 4
    ids, mask, _ = teacher_inputs(batch, n, pad)
    pos = teacher_position_ids(batch, mask, (grid[0], grid[1] // 2, grid[2] // 2))
    thw = torch.tensor([grid] * ids.shape[0])
    from vamba_eval.train.forward import _check_rope

    teacher._vamba_rope_checked = False
    _check_rope(teacher, ids, mask, thw, pos, {"mm_token_type_ids": (ids == pad).int() * 2})  # raises on a mismatch
    assert teacher._vamba_rope_checked
    bad = pos.clone()
    bad[2, 0, batch.vision_start[0] + 3] += 1  # one video token's width index off by one
    with pytest.raises(RuntimeError, match="M-RoPE"):
        _check_rope(teacher, ids, mask, thw, bad, {"mm_token_type_ids": (ids == pad).int() * 2})


# --- the command line -----------------------------------------------------------------------------
def test_train_all_command_runs_every_stage(tmp_path):
    from vamba_eval.train.__main__ import main

    steps = [f"--set={s}.steps=1" for s in ("teacher", "stage1", "stage2")]
    assert main(["all", "--out", str(tmp_path), "--preset", "test", "--tasks", "lvbench",
                 "--set", "data.caption_videos=1", "--set", "distill_lambda=0.5", *steps]) == 0
    for name in ("qwen2vl-tiny", "vamba-tiny"):
        folder = tmp_path / "checkpoints" / name
        assert {"config.json", "model.safetensors", "tokenizer.json", "training.json", "README.md"} <= {
            p.name for p in folder.iterdir()}
    card = (tmp_path / "checkpoints" / "vamba-tiny" / "README.md").read_text()
    assert "never seen real video" in card and "| stage2 |" in card and "| teacher |" in card
    record = json.loads((tmp_path / "checkpoints" / "vamba-tiny" / "training.json").read_text())
    assert record["recipe"]["variant"] == "D" and record["recipe"]["distill_lambda"] == 0.5
    assert json.loads((tmp_path / "checkpoints" / "vamba-tiny" / "config.json").read_text())["distill_coeff"] == 0.5
    stages = [json.loads(line).get("stage") for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert {"data", "teacher", "continue", "convert", "stage1", "stage2", "export"} <= set(stages)
    # the test preset's two teacher rounds: round 1, then one continue round, each validated in the history
    hist = json.loads((tmp_path / "teacher" / "history.json").read_text())
    assert [h["stage"] for h in hist if "val_first_token_acc" in h] == ["teacher", "teacher+1"]
    assert any(h.get("stage") == "teacher+1" and "step" in h for h in hist)


def test_all_runs_one_continue_per_extra_teacher_round():
    from vamba_eval.train.__main__ import all_stages

    recipe = preset("test")
    recipe.teacher_rounds = 3
    assert all_stages(recipe) == ["data", "teacher", "continue", "continue", "convert", "stage1", "stage2", "export"]
    recipe.teacher_rounds = 1
    assert "continue" not in all_stages(recipe)


def test_continue_needs_a_teacher_and_its_data(tmp_path):
    from vamba_eval.train.__main__ import main

    with pytest.raises(FileNotFoundError, match="run the teacher stage first"):
        main(["continue", "--out", str(tmp_path), "--preset", "test"])


# --- the bundled checkpoints ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_sample(tmp_path_factory):
    from vamba_eval.registry import get_task
    from vamba_eval.run.config import RunConfig
    from vamba_eval.run.plan import frame_spec
    from vamba_eval.task_api import PromptContext
    from vamba_eval.video import load_frames

    task = get_task("lvbench")
    folder = task.write_demo(tmp_path_factory.mktemp("demo") / "lvbench", 0)
    sample = next(s for s in task.load(folder) if s.sample_id == "9")  # one both bundled models answer right
    video = load_frames(sample.video.path, frame_spec(task, RunConfig(tasks=["lvbench"]), True))
    return task, sample, video, task.prompt(sample, PromptContext(tuple(video.times)))


@pytest.mark.parametrize("name,model", [("vamba-tiny", "vamba"), ("qwen2vl-tiny", "qwen2vl")])
def test_bundled_checkpoint_loads_and_answers(name, model, demo_sample):
    from vamba_eval.models.base import ModelSpec
    from vamba_eval.registry import get_model_factory
    from vamba_eval.types import Request

    folder = PACKAGE_CKPTS / name
    if not (folder / "config.json").is_file():
        pytest.skip(f"{folder}: no bundled checkpoint yet (python -m vamba_eval.train all --out DIR --device cuda, "
                    "then python -m vamba_eval.train install --out DIR)")
    assert ckpt.folder_bytes(folder) <= MAX_CKPT_BYTES
    if name == "vamba-tiny":  # the 7B's loader, strict
        assert ckpt.load_vamba(folder).config.mixer_type == "mamba2"
    else:
        assert type(ckpt.load_qwen2vl(folder)).__name__ == "Qwen2VLForConditionalGeneration"
    adapter = get_model_factory(model)(ModelSpec(model))
    assert adapter.describe()["untrained"] is False
    task, sample, video, prompt = demo_sample
    with warnings.catch_warnings():  # e.g. transformers' renamed KV-cache keyword: no deprecation noise in runs
        warnings.simplefilter("error", FutureWarning)
        pred = adapter.generate([Request(sample.sample_id, video.frames, tuple(video.times), prompt, 16)])[0]
    verdict = task.score(pred.text, sample, "official")
    assert verdict.extraction.answer == sample.answer, f"reply {pred.text!r}, gold {sample.answer}"


@pytest.mark.parametrize("model,checkpoint", [("vamba", "vamba-tiny"), ("qwen2vl", "qwen2vl-tiny")])
def test_bundled_checkpoints_beat_chance_on_the_demo_splits(model, checkpoint, tmp_path, monkeypatch):
    """All 230 demo questions of the five multiple-choice tasks, as `vamba-eval run` scores them (CPU, float32):
    vamba-tiny 109 right, qwen2vl-tiny 114 (the checkpoints before 2026-11-25: 102 / 100); guessing gets 57.2 ± 6.5
    (≥ 95 is 5.8 standard deviations above it)."""
    from vamba_eval import evaluate

    if not (PACKAGE_CKPTS / checkpoint / "config.json").is_file():
        pytest.skip(f"no bundled {checkpoint}")
    monkeypatch.setenv("VAMBA_EVAL_CACHE", str(tmp_path / "cache"))
    evaluate(tasks="lvbench,videomme,mlvu,longvideobench,mvbench", model=model, output=str(tmp_path / "run"),
             progress=False, report=False, dtype="float32")
    rows = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 230 and not any(r["error"] for r in rows)
    assert sum(bool(r["correct"]) for r in rows) >= 95


def test_student_refuses_data_tokenised_with_another_tokenizer(tmp_path):
    from vamba_eval.train.loop import Logger
    from vamba_eval.train.stages import run_student

    (tmp_path / "run" / "converted").mkdir(parents=True)
    (tmp_path / "run" / "converted" / "tokenizer.json").write_text('{"model": "one"}')
    (tmp_path / "data" / "tokenizer").mkdir(parents=True)
    (tmp_path / "data" / "tokenizer" / "tokenizer.json").write_text('{"model": "another"}')
    with pytest.raises(ValueError, match="tokenizer is not .*rebuild the data with the teacher's recipe"):
        run_student(tmp_path / "run", tmp_path / "data", preset("test"), torch.device("cpu"), Logger(None), "stage1")


def test_a_stage_without_its_inputs_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    from vamba_eval.train.__main__ import main as train_main

    assert train_main(["stage1", "--out", str(tmp_path / "run")]) == 2
    assert "converted: no checkpoint with a tokenizer.json" in capsys.readouterr().err
    (tmp_path / "run" / "converted").mkdir(parents=True)
    (tmp_path / "run" / "converted" / "tokenizer.json").write_text("{}")
    assert train_main(["stage1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "no training data" in err and "python -m vamba_eval.train data --out DIR" in err


def test_the_first_teacher_round_fits_one_gpu_call_and_untimed_presets_stay_untimed():
    gpu = preset("gpu")
    first = gpu.first_teacher_round()
    assert first.max_seconds == gpu.teacher_first_seconds < gpu.teacher.max_seconds
    assert (first.lr, first.batch, first.steps) == (gpu.teacher.lr, gpu.teacher.batch, gpu.teacher.steps)
    # vision + binding + round 1's video training (+ ~50 s of pair rendering and validation) inside 10 minutes
    assert gpu.vision.max_seconds + gpu.binding.max_seconds + first.max_seconds + 50 <= 540
    cpu = preset("cpu")
    assert cpu.teacher.max_seconds == 0 and cpu.first_teacher_round() == cpu.teacher  # steps, not seconds


def test_recipe_overrides_parse_types_and_reject_unknown_keys():
    from vamba_eval.train.recipe import apply_overrides

    r = apply_overrides(preset("test"), ["cross_attn_rope=true", "stage2.max_seconds=12", "variant=B"])
    assert r.cross_attn_rope is True and r.stage2.max_seconds == 12.0 and r.variant == "B"
    with pytest.raises(ValueError, match="no recipe field 'stage2.secs'"):
        apply_overrides(preset("test"), ["stage2.secs=3"])
    for bad, why in [("cross_attn_rope=yes", "not a JSON value"), ('cross_attn_rope="false"', "expected bool"),
                     ("stage2.steps=1.7", "expected int"), ("variant.x=1", "no recipe field")]:
        with pytest.raises(ValueError, match=why):
            apply_overrides(preset("test"), [bad])


@pytest.mark.parametrize("argv, says", [
    (["convert", "--set", "cross_attn_rope=yes"], "not a JSON value"),
    (["convert", "--set", "variant=E"], "unknown variant; use one of A, B, C, D"),
    (["convert"], "no teacher checkpoint — run the `teacher` stage first"),
])
def test_train_cli_bad_input_exits_2_with_a_message(tmp_path, capsys, argv, says):
    from vamba_eval.train.__main__ import main

    assert main([*argv, "--out", str(tmp_path), "--preset", "test"]) == 2
    assert says in capsys.readouterr().err
