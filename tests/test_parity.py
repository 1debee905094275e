"""The scoring-parity page: official vs lmms-eval scoring on the same responses, and why they differ."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vamba_eval.interop.lmms_import import ImportOptions, import_lmms_eval
from vamba_eval.interop.lmms_output import SIDECAR
from vamba_eval.interop.parity import compute, render
from vamba_eval.interop.parity_reasons import Verdict, explain, from_fields, logged_verdict
from vamba_eval.registry import get_task
from vamba_eval.run import store
from vamba_eval.run.process import score_fields

FIXTURE = Path(__file__).parent / "data" / "lmms_eval_output"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("parity") / "run"
    import_lmms_eval(FIXTURE, ImportOptions(out=out, data_dir=str(FIXTURE / "releases")))
    return out


def test_imported_run_parity(run_dir) -> None:
    rep = compute(run_dir)
    vm = next(t for t in rep.tasks if t.task == "videomme")
    assert vm.n_compared == 18 and len(vm.diffs) == 6
    assert vm.values["official"] == pytest.approx(100 / 12) and vm.denominators["official"] == 12
    assert vm.values["lmms-eval"] == pytest.approx(100 / 18) and vm.values["lmms-eval (logged)"] == pytest.approx(100 / 18)
    assert vm.reported["videomme_vambademo"]["videomme_perception_score"] == pytest.approx(100 / 18)
    assert list(vm.reasons) == ["no answer extracted: official excludes it from the denominator, lmms-eval counts it wrong"]
    assert all(d.official.correct is None and d.lmms.correct is False and d.logged.correct is False for d in vm.diffs)
    assert not vm.logged_diffs  # our lmms-eval mode reproduces what lmms-eval 0.7.3 logged on these responses
    assert any("OUT of the denominator" in k for k in vm.known)
    mv = next(t for t in rep.tasks if t.task == "mvbench")
    assert mv.n_compared == 4 and not mv.diffs and any("LAST candidate" in k for k in mv.known)


def test_page_escapes_responses_and_lists_reasons(run_dir, tmp_path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    lines = (copy / store.SAMPLES).read_text().splitlines()
    rec = json.loads(lines[-1])
    rec["response"] = "<script>alert(1)</script> no letter here"
    lines[-1] = json.dumps(rec)
    (copy / store.SAMPLES).write_text("\n".join(lines) + "\n")
    page = render(copy).read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert "no answer extracted" in page
    assert "Known divergences" in page and "http://" not in page and "https://" not in page


def test_native_run_without_lmms_log(run_dir, tmp_path) -> None:
    """A vamba-eval run (no import provenance, no lmms-eval log): official vs our lmms-eval mode only."""
    copy = tmp_path / "native"
    shutil.copytree(run_dir, copy)
    (copy / SIDECAR).unlink()
    conf = store.read_config(copy)
    conf.pop("imported")
    store.write_json(copy / store.CONFIG, conf)
    rep = compute(copy)
    vm = next(t for t in rep.tasks if t.task == "videomme")
    assert "lmms-eval (logged)" not in vm.values and len(vm.diffs) == 6 and not vm.reported
    assert "A vamba-eval run" in render(copy).read_text()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return {t: get_task(t).load(get_task(t).write_demo(root / t, 0)) for t in ("mvbench", "lvbench", "longvideobench")}


def _both(task: str, sample, response: str) -> tuple[Verdict, Verdict]:
    t = get_task(task)
    return (from_fields(score_fields(t, sample, response, "official")),
            from_fields(score_fields(t, sample, response, "lmms-eval")))


def test_reason_mvbench_empty_output(demo) -> None:
    off, lmm = _both("mvbench", demo["mvbench"][0], "")
    assert off.correct is True and lmm.correct is None  # the official '(' quirk vs lmms-eval's exclusion
    assert "empty output" in explain("mvbench", off, lmm, "")


def test_reason_lvbench_first_character(demo) -> None:
    sample = demo["lvbench"][0]
    response = f"The answer is {sample.answer}"
    off, lmm = _both("lvbench", sample, response)
    assert off.correct is False and lmm.correct is True
    assert "first character" in explain("lvbench", off, lmm, response)


def test_reason_longvideobench_random_fallback(demo) -> None:
    sample = demo["longvideobench"][0]
    off, lmm = _both("longvideobench", sample, "no idea at all")
    flagged = Verdict(off.extracted, not off.correct, off.rule, off.flags)  # lmms-eval's RNG drew another letter
    assert "random fallback" in explain("longvideobench", off, flagged, "no idea at all")


def test_logged_verdicts() -> None:
    assert logged_verdict("lvbench", {"lvbench_score": True}).correct is True
    vm = logged_verdict("videomme", {"videomme_perception_score": {"pred_answer": "", "answer": "A", "score": 0.0}})
    assert (vm.extracted, vm.correct) == (None, False)
    mv = logged_verdict("mvbench", {"mvbench_accuracy": {"pred_answer": "", "gt_answer": "A", "score": 1}})
    assert mv.correct is None
    lvb = logged_verdict("longvideobench", {"lvb_acc": {"id": "x", "parsed_pred": "B", "answer": "B"}})
    assert lvb.correct is True and logged_verdict("videomme", {}) is None
