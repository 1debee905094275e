"""Depth growth of a trained teacher (train/grow.py): the grown model computes exactly what the original did,
saves and loads through the official layout with its new depth, decodes with a KV cache, and its new layers
learn."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vamba_eval.train import ckpt
from vamba_eval.train.grow import grow_depth
from vamba_eval.train.stages import load_tokenizer_from

BUNDLED = Path(__file__).resolve().parents[1] / "vamba_eval" / "checkpoints" / "qwen2vl-tiny"


@pytest.fixture()
def teacher():
    if not (BUNDLED / "model.safetensors").exists():
        pytest.skip("the package ships no qwen2vl-tiny checkpoint")
    return ckpt.load_qwen2vl(BUNDLED, "cpu").eval()


def _ids(vocab: int) -> torch.Tensor:
    return torch.randint(10, vocab, (2, 23), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("after", [2, 4])
def test_grown_teacher_computes_the_same_logits(teacher, after) -> None:
    ids = _ids(teacher.config.text_config.vocab_size)
    with torch.no_grad():
        before = teacher(input_ids=ids).logits
        grow_depth(teacher, 2, after)
        after_logits = teacher(input_ids=ids).logits
    assert len(teacher.model.language_model.layers) == 6
    assert [layer.self_attn.layer_idx for layer in teacher.model.language_model.layers] == list(range(6))
    torch.testing.assert_close(after_logits, before, rtol=0, atol=0)


def test_grown_teacher_round_trips_and_decodes(teacher, tmp_path) -> None:
    ids = _ids(teacher.config.text_config.vocab_size)[:1]
    with torch.no_grad():
        want = teacher.generate(input_ids=ids, max_new_tokens=5, do_sample=False)
    grow_depth(teacher, 2, 2)
    folder = ckpt.save_qwen2vl(teacher, tmp_path / "grown", load_tokenizer_from(BUNDLED))
    again = ckpt.load_qwen2vl(folder, "cpu").eval()
    assert again.config.text_config.num_hidden_layers == 6
    with torch.no_grad():
        got = again.generate(input_ids=ids, max_new_tokens=5, do_sample=False)
    assert torch.equal(got, want)


def test_new_layers_learn(teacher) -> None:
    grow_depth(teacher, 1, 2)
    new = teacher.model.language_model.layers[2]
    ids = _ids(teacher.config.text_config.vocab_size)
    opt = torch.optim.SGD(teacher.parameters(), lr=0.1)
    for _ in range(2):
        loss = teacher(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert new.self_attn.o_proj.weight.abs().sum() > 0 and new.mlp.down_proj.weight.abs().sum() > 0


def test_grow_rejects_a_bad_position(teacher) -> None:
    with pytest.raises(ValueError, match="1 ≤ after ≤ 4"):
        grow_depth(teacher, 2, 5)
