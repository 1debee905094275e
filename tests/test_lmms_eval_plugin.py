"""VAMBA as an lmms-eval model: found by lmms-eval's own registry, answering requests built the way
lmms-eval builds them, and end to end through the real ``lmms-eval`` CLI (offline, tiny model,
generated videos) into ``vamba-eval import lmms-eval``.

Needs the ``lmms-eval`` extra (its own venv, see README); skipped without it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

lmms_eval = pytest.importorskip("lmms_eval")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lmms_fixture  # noqa: E402
import video_fixtures as vf  # noqa: E402
from lmms_eval.api.instance import Instance  # noqa: E402
from lmms_eval.api.model import lmms  # noqa: E402

from vamba_eval.integrations.lmms_eval_model import PluginArgError, Qwen2VLLMMs, VambaLMMs  # noqa: E402

ARGS = "max_frames_num=4,max_edge=56,min_edge=none,seed=0"


def test_registry_resolves_our_models() -> None:
    from lmms_eval import models

    for name, cls in (("vamba", VambaLMMs), ("vamba_eval_qwen2vl", Qwen2VLLMMs)):
        manifest = models.get_model_manifest(name)
        assert manifest.simple_class_path == f"{cls.__module__}.{cls.__name__}", (
            "the lmms_eval.models entry point is missing from vamba-eval's installed metadata: "
            "re-run pip install -e '.[lmms-eval]'")
        got = models.get_model(name)
        assert got is cls and issubclass(got, lmms) and got.is_simple
    assert "qwen2_vl" in models.list_available_models()  # lmms-eval's own model is left alone


@pytest.fixture(scope="module")
def model() -> VambaLMMs:
    # what `lmms-eval --model vamba --model_args ARGS --device cpu --batch_size 1` does
    return VambaLMMs.create_from_arg_string(ARGS, {"batch_size": 1, "max_batch_size": None, "device": "cpu"})


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return vf.write_video(tmp_path_factory.mktemp("vid") / "clip.mp4", 20)


def _request(model: VambaLMMs, doc: dict, visual, ctx: str = "Which colour?\nA. red\nB. blue", gen=None,
             task: str = "videomme") -> Instance:
    model.task_dict = {task: {"test": [doc]}}
    args = (ctx, gen if gen is not None else {"max_new_tokens": 8, "temperature": 0, "until": ["\n\n"]},
            visual, 0, task, "test")
    return Instance(request_type="generate_until", arguments=args, idx=0,
                    metadata={"task": task, "doc_id": 0, "repeats": 1})


def _text(out) -> str:
    return out if isinstance(out, str) else out.text


def test_generate_until_on_a_video(model, video) -> None:
    from vamba_eval.types import Prompt, Request
    from vamba_eval.video import load_frames

    req = _request(model, {"videoID": "clip"}, lambda doc: [str(video)])
    out = model.generate_until([req])
    assert len(out) == 1 and isinstance(_text(out[0]), str)
    assert out[0].token_counts.output_tokens <= 8
    spec = model.frame_spec("videomme")
    assert (spec.num_frames, spec.max_edge, spec.min_edge) == (4, 56, None)
    frames = load_frames(str(video), spec)  # the same decode + adapter directly: the same answer
    direct = model.adapter.generate([Request("x", frames.frames, tuple(frames.times),
                                             Prompt(user="Which colour?\nA. red\nB. blue"), 8)])[0]
    assert _text(out[0]) == direct.text.split("\n\n")[0]


def test_stop_strings_and_images(model) -> None:
    from PIL import Image

    from vamba_eval.integrations.lmms_eval_model import _cut_at_stops

    assert _cut_at_stops("B. blue\n\nmore", ["\n\n"]) == "B. blue" and _cut_at_stops("AB", "B") == "A"
    images = [Image.fromarray(np.full((40, 60, 3), 50 * i, np.uint8)) for i in range(3)]
    out = model.generate_until([_request(model, {}, lambda doc: images, task="some_image_task")])
    assert isinstance(_text(out[0]), str)


def test_unsupported_is_said_clearly(model, video) -> None:
    with pytest.raises(NotImplementedError, match="generate_until only"):
        model.loglikelihood([])
    with pytest.raises(NotImplementedError, match="multi-round"):
        model.generate_until_multi_round([])
    with pytest.raises(RuntimeError, match="exactly one video path"):
        model.generate_until([_request(model, {}, lambda doc: [str(video), str(video)])])
    with pytest.raises(RuntimeError, match="text-only"):
        model.generate_until([_request(model, {}, lambda doc: [])])
    with pytest.raises(RuntimeError, match="on_error=empty"):
        model.generate_until([_request(model, {}, lambda doc: ["/nonexistent/video.mp4"])])
    with pytest.raises(PluginArgError, match="unknown --model_args key.*accepted: .*max_frames_num"):
        VambaLMMs.create_from_arg_string("pretrained_path=/x", {})


def test_on_error_empty(video) -> None:
    m = VambaLMMs.create_from_arg_string(ARGS + ",on_error=empty", {"device": "cpu"})
    out = m.generate_until([_request(m, {}, lambda doc: ["/nonexistent/video.mp4"])])
    assert _text(out[0]) == ""


def test_lmms_eval_cli_end_to_end(tmp_path) -> None:
    """`lmms-eval --model vamba … --log_samples` for real, then imported with official ids."""
    from vamba_eval.interop.lmms_import import ImportOptions, import_lmms_eval
    from vamba_eval.interop.lmms_output import read_output
    from vamba_eval.run import store

    proc = lmms_fixture.run_lmms_eval(tmp_path, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = read_output(tmp_path / "out")
    assert set(output.samples) == set(lmms_fixture.TASKS)
    assert output.config["model_backend"].startswith("vamba_eval.integrations.lmms_eval_model.VambaLMMs")
    res = import_lmms_eval(tmp_path / "out", ImportOptions(out=tmp_path / "run", data_dir=str(tmp_path / "releases")))
    recs = store.load_records(res.run_dir / store.SAMPLES)
    assert len([1 for t, _ in recs if t == "videomme"]) == 18 and len([1 for t, _ in recs if t == "mvbench"]) == 4
    committed = read_output(lmms_fixture_dir())
    assert {t: len(v) for t, v in committed.samples.items()} == {t: len(v) for t, v in output.samples.items()}


def lmms_fixture_dir() -> Path:
    return Path(__file__).parent / "data" / "lmms_eval_output"
