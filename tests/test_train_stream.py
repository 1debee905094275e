"""Fresh training data (vamba_eval.train.stream / data.task_chunk(fast=True)): frames drawn from the
scripts match the decoded videos of a run, and the streaming train set serves fresh batches,
stays throttled and shuts down cleanly."""

from __future__ import annotations

import time

import numpy as np
import pytest

from vamba_eval.train.batches import IGNORE
from vamba_eval.train.data import task_chunk, write_data
from vamba_eval.train.recipe import preset
from vamba_eval.train.stream import StreamSet, job_schedule
from vamba_eval.train.tokenizer import train_bpe, training_texts


@pytest.mark.parametrize("task", ["videomme", "mvbench"])
def test_script_frames_match_decoded_frames(task):
    """Same samples, prompts and targets; pixels within the encoder's loss (mean |Δ| of a few levels)."""
    fast_frames, fast_examples = task_chunk(task, 4321, 1, fast=True)
    slow_frames, slow_examples = task_chunk(task, 4321, 1, fast=False)
    qa = [e for e in fast_examples if e["kind"] == "qa"]
    assert qa == [e for e in slow_examples if e["kind"] == "qa"]
    assert len(fast_frames) == len(slow_frames)
    for a, b in zip(fast_frames, slow_frames):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 4.0
    # mp4 sources get a caption from their captured script; a wrong script would name the wrong colours
    assert any(e["kind"] == "caption" for e in fast_examples)


def test_job_schedule_follows_the_recipe_weights():
    recipe = preset("gpu").data
    cycle = job_schedule(recipe, ["lvbench", "mvbench"])
    assert cycle.count("lvbench") == 2 * cycle.count("mvbench")  # 400 vs 200 videos


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream") / "data"
    frames, examples = task_chunk("lvbench", 1000, 1, fast=True)
    write_data(folder, {"8x84x168": frames}, [("8x84x168", i) for i in range(len(frames))], examples, ["lvbench"])
    tok = train_bpe(training_texts(examples), 400)
    tok.save_pretrained(str(folder / "tokenizer"))
    return folder, tok


def fresh_qa(data: StreamSet) -> int:
    return sum(len(q) for (kind, _), q in list(data.fresh.items()) if kind == "qa")


def test_stream_set_serves_fresh_examples_and_closes(data_folder):
    folder, tok = data_folder
    recipe = preset("test").data
    data = StreamSet(folder, tok, recipe, seed=0, workers=1, tokenizer_dir=folder / "tokenizer", cached_share=0.0,
                     ahead=60)
    try:
        deadline = time.monotonic() + 120
        while not fresh_qa(data) and time.monotonic() < deadline:
            time.sleep(0.2)
        fresh = fresh_qa(data)
        assert fresh > 0, "no fresh example within 120 s"
        time.sleep(3.0)  # the producer must now wait for consumption (ahead=60)
        produced = data.produced
        per_release = len(task_chunk("lvbench", 1001, 1, fast=True)[1])  # what one stream job adds, about
        assert produced <= 60 + 2 * per_release  # past the limit: at most the release being added
        time.sleep(2.0)
        assert data.produced == produced  # and then nothing more until something is consumed
        size = min(4, fresh)
        batch = data.sample("qa", size, np.random.default_rng(0))
        assert batch.ids.shape[0] == size and tuple(batch.frames.shape[1:]) == (8, 84, 168, 3)
        assert (batch.labels != IGNORE).any(dim=1).all()
        reply = tok.decode(batch.ids[0][batch.labels[0] != IGNORE])
        assert reply.endswith("<|im_end|>")
        assert data.consumed == size
    finally:
        data.close()
    data._thread.join(timeout=30)
    assert not data._thread.is_alive()


def test_a_failing_producer_stops_training_with_a_clear_error(data_folder):
    """A release that fails in a worker must not leave training on stale data without a word."""
    folder, tok = data_folder
    recipe = preset("test").data
    data = StreamSet(folder, tok, recipe, seed=0, workers=1, tokenizer_dir=folder / "missing-tokenizer",
                     cached_share=0.0)
    try:
        deadline = time.monotonic() + 120
        while data.error is None and time.monotonic() < deadline:
            time.sleep(0.2)
        with pytest.raises(RuntimeError, match="fresh-data producer failed"):
            data.sample("qa", 2, np.random.default_rng(0))
    finally:
        data.close()
