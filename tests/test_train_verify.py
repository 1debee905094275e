"""The option-verification loss (train/forward.option_verify_loss): every option line's last token is marked
(answer or not), the marks line up in both model families' sequences, the loss is the hand-computed binary
cross-entropy, and the steps add it only when asked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vamba_eval.train.batches import (TrainSet, answer_token, collate_items, encode_example, encode_item, option_marks,
                                      teacher_inputs, token_ids)
from vamba_eval.train.forward import option_verify_loss
from vamba_eval.train.formats import OPTION_RE
from vamba_eval.train.recipe import preset
from vamba_eval.train.stages import student_step, teacher_step, verify_setting, with_probe
from train_data import teacher_and_student, write_releases  # tests/train_data.py


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    folder = tmp_path_factory.mktemp("verify") / "data"
    examples, tok = write_releases(folder, ("videomme", "mlvu"), 1000, copies=1, drills=2)
    return folder, examples, tok


def test_marks_sit_on_each_option_lines_last_token(release) -> None:
    _, examples, tok = release
    eos = token_ids(tok).eos
    seen = {"qa": 0, "drill": 0}
    for ex in examples:
        marks = option_marks(tok, ex)
        if ex["kind"] in ("open", "caption") or (ex["kind"] == "drill" and "exactly" not in ex["prompt"]["user"]):
            assert marks == (), ex  # no options, or no single answer (a drill's listing)
            continue
        prompt, reply = encode_example(tok, ex, eos)
        assert encode_item(tok, ex, eos) == (prompt, reply, answer_token(tok, ex), marks)  # one tokenisation, same ids
        options = [m.group(2).strip() for m in map(OPTION_RE.match, ex["prompt"]["user"].split("\n")) if m]
        assert len(marks) == len(options) and [y for _, y in marks].count(1) == 1
        for (pos, y), text in zip(marks, options):
            assert tok.decode(list(prompt[pos + 1:pos + 2])) == "\n"  # the line ends after the marked token
            assert tok.decode(list(prompt[:pos + 1])).endswith(text)
            assert y == int(text == ex["answer"])
        seen[ex["kind"]] += 1
    assert min(seen.values()) >= 5, seen


def test_verify_loss_equals_hand_computation() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(2, 9, 8)
    norm, probe = torch.nn.LayerNorm(8), torch.nn.Linear(8, 1)
    marks = torch.tensor([[[1, 0], [3, 1], [5, 0]], [[2, 1], [-1, -1], [-1, -1]]])  # row 1: one option only
    loss, acc = option_verify_loss(hidden, probe, norm, marks, shift=2)
    logit = probe(norm(torch.stack([hidden[0, 3], hidden[0, 5], hidden[0, 7], hidden[1, 4]]))).squeeze(-1)
    gold = torch.tensor([0.0, 1.0, 0.0, 1.0])
    expected = -(gold * F.logsigmoid(logit) + (1 - gold) * F.logsigmoid(-logit)).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    assert acc == float(((logit > 0).float() == gold).float().mean())
    none, nan = option_verify_loss(hidden, probe, norm, None)
    assert float(none) == 0.0 and nan != nan


def test_items_collate_their_marks_padded() -> None:
    frames = np.zeros((2, 28, 28, 3), np.uint8)
    batch = collate_items([((1, 5, 2), (3,), frames, 7, ((0, 1), (2, 0))), ((1, 5, 2), (3,), frames, 7, ()),
                           ((1, 5, 2), (3,), frames)], 0, 5)
    assert batch.marks.tolist() == [[[0, 1], [2, 0]], [[-1, -1], [-1, -1]], [[-1, -1], [-1, -1]]]
    assert collate_items([((1, 5), (3,), frames)], 0, 5).marks is None


@pytest.fixture(scope="module")
def models(release):
    folder, _, tok = release
    data = TrainSet(folder, tok, holdout_every=0)
    recipe, teacher, student = teacher_and_student(tok)
    qa = [i for i, e in enumerate(data.examples) if e["kind"] == "qa"][:4]
    return {"tok": tok, "recipe": recipe, "teacher": teacher, "student": student, "batch": data.collate(qa)}


def test_marks_line_up_in_the_teachers_sequence(models) -> None:
    pad = token_ids(models["tok"]).video_pad
    batch, n = models["batch"], 7
    ids, _, _ = teacher_inputs(batch, n, pad)
    rows, cols = torch.nonzero(batch.marks[..., 0] >= 0, as_tuple=True)
    pos = batch.marks[rows, cols, 0]
    assert torch.equal(ids[rows, pos + n], batch.ids[rows, pos])


def test_both_steps_add_the_verify_loss(models) -> None:
    pad = token_ids(models["tok"]).video_pad
    batch = models["batch"]
    torch.manual_seed(0)
    verify = (0.5, 1, torch.nn.Linear(models["recipe"].model.hidden, 1))
    with torch.no_grad():
        plain, parts0 = teacher_step(models["teacher"], pad)(batch)
        both, parts = teacher_step(models["teacher"], pad, verify=verify)(batch)
        s_plain, _ = student_step(models["student"], None, 0.0, 10, pad)(batch)
        s_both, s_parts = student_step(models["student"], None, 0.0, 10, pad, verify=verify)(batch)
    assert "verify" not in parts0 and 0.0 <= parts["verify_acc"] <= 1.0
    assert float(both) == pytest.approx(float(plain) + 0.5 * parts["verify"], rel=1e-5)
    assert float(s_both) == pytest.approx(float(s_plain) + 0.5 * s_parts["verify"], rel=1e-5)
    with pytest.raises(ValueError, match="option_verify_layer=2: pick 1 … 1"):
        teacher_step(models["teacher"], pad, verify=(0.5, 2, verify[2]))  # the test model's last layer


def test_verify_setting_is_off_by_default_and_names_a_bad_layer() -> None:
    recipe = preset("gpu")
    assert verify_setting(recipe, torch.device("cpu")) is None
    recipe.option_verify_weight = 1.0
    weight, layer, probe = verify_setting(recipe, torch.device("cpu"))
    assert (weight, layer, probe.in_features) == (1.0, 2, recipe.model.hidden)
    params = with_probe([torch.nn.Parameter(torch.zeros(1))], (weight, layer, probe))
    assert len(params) == 3  # the model's one + the probe's weight and bias
    recipe.option_verify_layer = recipe.model.layers
    with pytest.raises(ValueError, match="option_verify_layer=4: pick 1 … 3"):
        verify_setting(recipe, torch.device("cpu"))
