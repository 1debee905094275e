"""The binding stage, open questions, blank-video batches, held-out letter / exact accuracy and the
teacher's joined-video forward (vamba_eval.train, session 4 of issue 6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vamba_eval.registry import get_task
from vamba_eval.train.batches import IGNORE, BlankVideo, TrainSet, token_ids
from vamba_eval.train.formats import OPEN_SUFFIX, open_question, option_texts
from vamba_eval.train.forward import teacher_forward
from vamba_eval.train.loop import validate
from vamba_eval.train.recipe import StageRecipe, preset
from vamba_eval.train.stages import new_teacher, run_binding
from train_data import write_releases  # tests/train_data.py


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two releases (lvbench, mlvu) with drills and open questions; every 2nd video held out."""
    folder = tmp_path_factory.mktemp("binding") / "data"
    examples, tok = write_releases(folder, ("lvbench", "mlvu"), 1001, drills=2)
    return {"tok": tok, "data": TrainSet(folder, tok, holdout_every=2), "examples": examples,
            "teacher": new_teacher(preset("test"), tok, 0)}


def test_open_question_is_the_question_without_options_answered_with_the_gold_text():
    task = get_task("lvbench")
    from pathlib import Path
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        sample = next(s for s in task.load(Path(task.write_demo(Path(tmp) / "r", 3))) if s.answer)
        prompt, text = open_question(sample)
    assert text == option_texts(sample)[ord(sample.answer) - 65]
    assert sample.question in prompt.user and prompt.user.endswith(OPEN_SUFFIX)
    assert not any(opt in prompt.user for opt in sample.options)  # no option line leaks in
    import dataclasses

    assert open_question(dataclasses.replace(sample, answer="")) is None


def test_task_chunk_has_one_open_example_per_labelled_question(setup):
    ex = setup["examples"]
    qa = [e for e in ex if e["kind"] == "qa" and ":" not in e["source"]]
    opened = [e for e in ex if e["kind"] == "open"]
    assert len(opened) == len(qa) > 0
    import re

    assert all(e["source"].endswith(":open") and e["target"] for e in opened)
    assert not any(re.search(r"\n\(?[A-D][.)]", e["prompt"]["user"]) for e in opened)  # no option lines


def test_blank_video_batches_are_one_black_token_and_keep_the_text(setup):
    data, teacher = setup["data"], setup["teacher"]
    vcfg = teacher.config.vision_config
    blank = BlankVideo(data, vcfg)
    b = blank.sample("drill", 3, np.random.default_rng(0))
    assert b.frames.shape == (3, vcfg.temporal_patch_size, 28, 28, 3) and int(b.frames.abs().sum()) == 0
    assert blank.count("drill") == data.count("drill") > 0
    with torch.no_grad():
        _, labels, n = teacher_forward(teacher.eval(), b, token_ids(setup["tok"]).video_pad)
    assert n == 1
    assert torch.equal(labels[:, 1 + n:][:, :b.labels.shape[1] - 1][b.labels[:, 1:] != IGNORE],
                       b.labels[:, 1:][b.labels[:, 1:] != IGNORE])
    assert all(v.frames.shape[1:] == b.frames.shape[1:] for v in blank.val_batches("drill", 8))


def test_validate_letter_and_exact_accuracy_count_what_they_say(setup):
    data, tok = setup["data"], setup["tok"]
    letters = torch.tensor(tok.convert_tokens_to_ids(list("ABCDEFGHIJ")))

    def oracle(batch):  # logits that put all mass on the gold token (and on the pad id elsewhere)
        gold = torch.cat([batch.labels[:, 1:], torch.full_like(batch.labels[:, :1], IGNORE)], 1)
        logits = torch.full((*gold.shape, len(tok)), -10.0)
        logits.scatter_(2, gold.clamp(min=0)[..., None], 10.0)
        return logits, batch.labels

    got = validate(oracle, data, torch.device("cpu"), kind="drill", letters=letters)
    assert got["val_drill_letter_acc"] == 1.0 and got["val_drill_exact"] == 1.0 and got["val_drill_n"] > 0
    qa = validate(oracle, data, torch.device("cpu"))
    assert qa["val_first_token_acc"] == 1.0 and qa["val_exact"] == 1.0

    def wrong_letters(batch):  # right everywhere except the letter positions
        logits, labels = oracle(batch)
        gold = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], IGNORE)], 1)
        is_letter = torch.isin(gold, letters)
        logits[is_letter] = logits[is_letter].roll(1, dims=-1)
        return logits, labels

    bad = validate(wrong_letters, data, torch.device("cpu"), kind="drill", letters=letters)
    assert bad["val_drill_letter_acc"] == 0.0 and bad["val_drill_exact"] == 0.0


def test_run_binding_trains_on_blank_drills_and_reports_held_out_letters(setup):
    import copy

    from vamba_eval.train.loop import Logger

    recipe = preset("test")
    recipe.binding = StageRecipe(steps=3, lr=3e-3, batch=4, warmup=0, drill_fraction=1.0)
    model = copy.deepcopy(setup["teacher"]).train()
    before = [p.detach().clone() for p in model.parameters()]
    hist = run_binding(model, setup["data"], recipe, torch.device("cpu"), Logger(None), setup["tok"])
    assert [h["step"] for h in hist if "step" in h][-1] == 3
    assert 0.0 <= hist[-1]["val_drill_letter_acc"] <= 1.0 and hist[-1]["val_drill_n"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    recipe.binding = StageRecipe(steps=0, lr=3e-3)
    assert run_binding(model, setup["data"], recipe, torch.device("cpu"), Logger(None), setup["tok"]) == []


def test_joined_video_forward_equals_per_video_and_the_check_catches_a_difference(setup):
    from vamba_eval.train.forward import _check_joined

    data, teacher = setup["data"], setup["teacher"].eval()
    pad = token_ids(setup["tok"]).video_pad
    qa = [i for i, e in enumerate(data.examples) if e["kind"] == "qa"][:3]
    batch = data.collate(qa)
    teacher._vamba_rope_checked = False  # runs _check_rope and _check_joined on this call
    with torch.no_grad():
        joined, _, _ = teacher_forward(teacher, batch, pad)
    assert teacher._vamba_rope_checked

    class Skewed(torch.nn.Module):  # a model whose output depends on how the videos are grouped
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, video_grid_thw=None, **kw):
            out = self.inner(video_grid_thw=video_grid_thw, **kw)
            if video_grid_thw.shape[0] == 1:
                out.logits = out.logits + 1.0
            return out

    from vamba_eval.train.batches import teacher_inputs, teacher_position_ids
    from vamba_eval.train.forward import batch_pixels

    vcfg = teacher.config.vision_config
    t, h, w = batch.frames.shape[1:4]
    grid = (t // 2, h // vcfg.patch_size, w // vcfg.patch_size)
    n = grid[0] * grid[1] * grid[2] // 4
    ids, mask, _ = teacher_inputs(batch, n, pad)
    pos = teacher_position_ids(batch, mask, (grid[0], grid[1] // 2, grid[2] // 2))
    pixels, _ = batch_pixels(batch.frames, vcfg)
    thw = torch.tensor([grid] * 3)
    one = torch.tensor([[grid[0] * 3, grid[1], grid[2]]])
    extra = {"mm_token_type_ids": (ids == pad).int() * 2}
    _check_joined(teacher, ids, mask, pos, pixels, thw, one, extra)  # the real model: no error
    with pytest.raises(RuntimeError, match="joined video"):
        _check_joined(Skewed(teacher), ids, mask, pos, pixels, thw, one, extra)
    assert joined.shape[0] == 3


def test_train_split_validation_reads_as_many_training_videos_and_exposes_memorisation(setup):
    data, tok = setup["data"], setup["tok"]
    train_rows = [b for b in data.val_batches("qa", 8, split="train")]
    val_rows = [b for b in data.val_batches("qa", 8)]
    n_train, n_val = sum(b.ids.shape[0] for b in train_rows), sum(b.ids.shape[0] for b in val_rows)
    assert 0 < n_train <= n_val  # the first of each training pool, as many as held out
    seen = {float(f.float().sum()) for b in train_rows for f in b.frames}

    def memoriser(batch):  # right on the training videos' questions, wrong on any other video
        gold = torch.cat([batch.labels[:, 1:], torch.full_like(batch.labels[:, :1], IGNORE)], 1)
        logits = torch.full((*gold.shape, len(tok)), -10.0)
        logits.scatter_(2, gold.clamp(min=0)[..., None], 10.0)
        for row, f in enumerate(batch.frames):
            if float(f.float().sum()) not in seen:
                logits[row] = logits[row].roll(1, dims=-1)
        return logits, batch.labels

    train = validate(memoriser, data, torch.device("cpu"), split="train")
    held = validate(memoriser, data, torch.device("cpu"))
    assert set(train) == {"train_first_token_acc", "train_exact", "train_lm", "train_n"}
    assert train["train_first_token_acc"] == 1.0 and held["val_first_token_acc"] == 0.0


def test_a_data_folder_loads_once_per_process_and_reloads_when_it_changes(tmp_path):
    folder = tmp_path / "data"
    _, tok = write_releases(folder, ("lvbench",), 1001, drills=0)
    first = TrainSet(folder, tok, holdout_every=2)
    again = TrainSet(folder, tok, holdout_every=2)
    assert again.examples is first.examples and again.pools == first.pools and again.pools is not first.pools
    again.to(torch.device("cpu")).frames.clear()  # one set's frames dict is its own
    assert TrainSet(folder, tok, holdout_every=2).frames
    other = TrainSet(folder, tok, holdout_every=3)  # another split → loaded anew
    assert other.examples is not first.examples
    path = folder / "examples.jsonl"
    path.write_text(path.read_text().splitlines()[0] + "\n")  # the folder changed → loaded anew
    assert len(TrainSet(folder, tok, holdout_every=2).examples) == 1
