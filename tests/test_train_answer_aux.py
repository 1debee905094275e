"""The answer-content loss (train/forward.answer_aux_loss): the examples carry the gold option's text,
its token is the option line's, the loss is the hand-computed cross-entropy, and both model families'
steps add it."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vamba_eval.train.batches import IGNORE, TrainSet, answer_token, collate_items, encode_example, token_ids
from vamba_eval.train.forward import answer_aux_loss, track_layer
from vamba_eval.train.recipe import preset
from vamba_eval.train.stages import aux_setting, student_step, teacher_step
from train_data import teacher_and_student, write_releases  # tests/train_data.py

OPTION_LINE = re.compile(r"^\(?([A-J])[\)\.:]\s*(.+)$", re.M)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    folder = tmp_path_factory.mktemp("aux") / "data"
    examples, tok = write_releases(folder, ("videomme",), 1000, copies=1, drills=2)
    return folder, examples, tok


def _options(user: str) -> dict[str, str]:
    return {m.group(1): m.group(2).strip() for m in OPTION_LINE.finditer(user)}


def test_examples_carry_the_gold_option_text(release) -> None:
    _, examples, _ = release
    checked = {"qa": 0, "open": 0, "drill": 0}
    for ex in examples:
        user = ex["prompt"]["user"]
        if ex["kind"] == "qa":
            letter = re.match(r"\(?([A-J])", ex["target"]).group(1)
            assert _options(user)[letter] == ex["answer"], (user, ex["target"])
        elif ex["kind"] == "drill" and "exactly" in user:
            assert f"exactly {ex['answer']}?" in user
        elif ex["kind"] == "open":
            assert ex["answer"] == ex["target"]
        else:
            assert "answer" not in ex  # captions and option listings: no single answer
            continue
        checked[ex["kind"]] += 1
    assert min(checked.values()) >= 5, checked


def test_answer_token_is_the_option_lines_token(release) -> None:
    _, examples, tok = release
    eos = token_ids(tok).eos
    named = 0
    for ex in (e for e in examples if e["kind"] == "qa"):
        prompt, _ = encode_example(tok, ex, eos)
        token = answer_token(tok, ex)
        assert token == IGNORE or token in prompt, ex["answer"]
        named += token != IGNORE
    assert named >= 5
    assert answer_token(tok, {"kind": "caption"}) == IGNORE


def test_answer_token_tells_the_answer_from_the_other_options(release) -> None:
    _, examples, tok = release
    first = lambda text: tok(" " + text, add_special_tokens=False)["input_ids"][0]  # noqa: E731
    ex = {"answer": "it appears partway through the scene",
          "others": ["it disappears partway through the scene", "it turns red", "it stays on screen unchanged"]}
    assert answer_token(tok, ex) == first("appears")  # not 'Ġit', which every option starts with
    assert answer_token(tok, {"answer": "BOX"}) == first("BOX")  # no other options known: the first token
    combo = {"answer": "a magenta square", "others": ["a magenta circle", "a black square", "a red cup"]}
    assert answer_token(tok, combo) == IGNORE  # no single token names it
    seq = {"answer": "red, blue", "others": ["blue, red"]}
    assert answer_token(tok, seq) == first("red")  # no token of its own, but only it starts with red
    for e in examples:
        if e["kind"] in ("qa", "open") or (e["kind"] == "drill" and "answer" in e):
            assert e["answer"] not in e["others"] and len(e["others"]) >= 2, e


def test_answer_aux_loss_equals_hand_computation() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(3, 6, 8)
    norm, head = torch.nn.LayerNorm(8), torch.nn.Linear(8, 11, bias=False)
    labels = torch.full((3, 6), IGNORE)
    labels[0, 3:] = 1  # reply starts at 3: predicted from position 2
    labels[1, 5] = 2  # predicted from position 4
    labels[2, 2:] = 4
    answer = torch.tensor([7, 9, IGNORE])  # the third row has no answer content
    loss, acc = answer_aux_loss(hidden, norm, head, labels, answer)
    logits = head(norm(torch.stack([hidden[0, 2], hidden[1, 4]])))
    expected = -(F.log_softmax(logits, -1)[0, 7] + F.log_softmax(logits, -1)[1, 9]) / 2
    assert torch.allclose(loss, expected, atol=1e-6)
    assert acc == float((logits.argmax(-1) == torch.tensor([7, 9])).float().mean())
    none, nan = answer_aux_loss(hidden, norm, head, labels, torch.full((3,), IGNORE))
    assert float(none) == 0.0 and nan != nan


def test_items_without_an_answer_collate_to_ignore() -> None:
    frames = np.zeros((2, 28, 28, 3), np.uint8)
    batch = collate_items([((1, 5, 2), (3, 4), frames), ((1, 5, 2, 2), (3,), frames, 17)], 0, 5)
    assert batch.answer.tolist() == [IGNORE, 17]
    assert batch.frames.shape == (2, 2, 28, 28, 3)


@pytest.fixture(scope="module")
def models(release):
    folder, _, tok = release
    data = TrainSet(folder, tok, holdout_every=0)
    recipe, teacher, student = teacher_and_student(tok)
    qa = [i for i, e in enumerate(data.examples) if e["kind"] == "qa" and data.answers[i] != IGNORE][:4]
    return {"tok": tok, "recipe": recipe, "teacher": teacher, "student": student, "batch": data.collate(qa)}


def test_teacher_step_adds_the_answer_loss(models) -> None:
    pad = token_ids(models["tok"]).video_pad
    teacher, batch = models["teacher"], models["batch"]
    assert aux_setting(models["recipe"]) == (1.0, 1)
    assert (batch.answer != IGNORE).all()
    with torch.no_grad():
        plain, parts0 = teacher_step(teacher, pad)(batch)
        both, parts = teacher_step(teacher, pad, aux=(0.5, 1))(batch)
    assert "aux" not in parts0 and 0.0 <= parts["aux_acc"] <= 1.0
    assert float(both) == pytest.approx(float(plain) + 0.5 * parts["aux"], rel=1e-5)
    with pytest.raises(ValueError, match="answer_aux_layer"):
        track_layer(teacher, 2)  # the test model has 2 layers: the last one is the output's, not a middle one


def test_student_step_adds_the_answer_loss(models) -> None:
    pad = token_ids(models["tok"]).video_pad
    student, batch = models["student"], models["batch"]
    with torch.no_grad():
        plain, _ = student_step(student, None, 0.0, 10, pad)(batch)
        both, parts = student_step(student, None, 0.0, 10, pad, aux=(2.0, 1))(batch)
    assert parts["aux"] > 0
    assert float(both) == pytest.approx(float(plain) + 2.0 * parts["aux"], rel=1e-5)


def test_answer_loss_off_is_the_plain_recipe_and_a_bad_layer_is_named() -> None:
    recipe = preset("gpu")
    assert aux_setting(recipe) == (1.0, 2)
    recipe.answer_aux_layer = recipe.model.layers  # the output layer: nothing left above it to find the letter
    with pytest.raises(ValueError, match="answer_aux_layer=4: pick 1 … 3"):
        aux_setting(recipe)
    recipe.answer_aux_weight = 0.0
    assert aux_setting(recipe) == (0.0, 0)
