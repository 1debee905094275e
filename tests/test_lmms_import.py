"""`vamba-eval import lmms-eval`: a real lmms-eval output folder (tests/data/lmms_eval_output, made by
running lmms-eval 0.7.3 with our plugin, see its NOTE.md) into a run that score/report/regress read.

Runs without lmms-eval installed: the importer only reads files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typer

from vamba_eval.interop.lmms_import import ImportOptions, LmmsImportError, import_lmms_eval
from vamba_eval.interop.lmms_output import SIDECAR, LmmsOutputError, read_output, response_of
from vamba_eval.interop.lmms_tasks import resolve
from vamba_eval.run import store

FIXTURE = Path(__file__).parent / "data" / "lmms_eval_output"
RELEASES = FIXTURE / "releases"
VIDEOMME_IDS = {f"{v:03d}-{q}" for v in range(1, 7) for q in (1, 2, 3)}
MVBENCH_IDS = {"action_sequence_000", "action_sequence_001", "object_existence_000", "object_existence_001"}


def _import(tmp_path: Path, name: str = "run", **kw) -> object:
    kw.setdefault("data_dir", str(RELEASES))
    return import_lmms_eval(FIXTURE, ImportOptions(out=tmp_path / name, **kw))


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    return _import(tmp_path_factory.mktemp("imp"))


def _logs(task: str) -> list[dict]:
    return read_output(FIXTURE).samples[task]


def test_official_ids_responses_and_prompts(imported) -> None:
    recs = store.load_records(imported.run_dir / store.SAMPLES)
    assert {sid for t, sid in recs if t == "videomme"} == VIDEOMME_IDS
    assert {sid for t, sid in recs if t == "mvbench"} == MVBENCH_IDS
    for log in _logs("videomme_vambademo"):
        rec = recs[("videomme", log["videomme_perception_score"]["question_id"])]
        assert rec.response == response_of(log) and rec.prompt == log["input"]
        assert rec.gold == log["target"] and rec.categories["duration"] == [log["videomme_perception_score"]["duration"]]
    for log in _logs("mvbench_object_existence_vambademo"):
        rec = recs[("mvbench", f"object_existence_{log['doc_id']:03d}")]
        assert rec.response == response_of(log) and rec.prompt == log["input"]
        assert rec.gold == log["mvbench_accuracy"]["gt_answer"]


def test_provenance_and_dataset_record(imported) -> None:
    conf = store.read_config(imported.run_dir)
    imp = conf["imported"]
    assert imp["from"] == "lmms-eval" and imp["model"] == "vamba" and "max_frames_num=4" in imp["model_args"]
    assert imp["tasks"] == {"videomme_vambademo": "videomme", "mvbench_action_sequence_vambademo": "mvbench",
                            "mvbench_object_existence_vambademo": "mvbench"}
    assert imp["reported"]["videomme_vambademo"]["videomme_perception_score"] == pytest.approx(5.5556, abs=1e-3)
    assert conf["config"]["model"] == "lmms-eval:vamba" and conf["config"]["frames"] == 4
    ds = conf["environment"]["datasets"]
    assert ds["videomme"]["n_samples"] == 18 and ds["videomme"]["synthetic"] is True
    assert ds["mvbench"]["n_samples"] == 4 and ds["mvbench"]["release_n_samples"] == 10
    sidecar = [json.loads(x) for x in (imported.run_dir / SIDECAR).read_text().splitlines()]
    assert len(sidecar) == 22 and all(s["verdict"] for s in sidecar)


def test_official_vs_lmms_eval_numbers(imported, tmp_path) -> None:
    from vamba_eval.run.api import rescore

    vm = imported.results.tasks["videomme"]
    assert (vm.scoring, vm.n, vm.n_scored, vm.n_unparsed) == ("official", 18, 12, 6)  # unparsed are excluded
    lm = rescore(imported.run_dir, "lmms-eval").tasks["videomme"]
    assert lm.n_scored == 18  # lmms-eval counts them wrong: here this reproduces lmms-eval's own number
    assert lm.overall.value == pytest.approx(5.5556, abs=1e-3)
    again = _import(tmp_path, scoring="lmms-eval").results.tasks["videomme"]
    assert again.overall.value == pytest.approx(lm.overall.value)
    rescore(imported.run_dir, "official")


def test_report_regress_and_leaderboard(imported) -> None:
    from vamba_eval.leaderboard import SubmissionRejected, add
    from vamba_eval.regress import compare
    from vamba_eval.run.api import render

    html = render(imported.run_dir).read_text()
    assert "001-1" in html
    rep = compare(imported.run_dir, imported.run_dir)
    assert rep.exit_code == 0 and {t.task for t in rep.tasks} == {"videomme", "mvbench"}
    with pytest.raises(SubmissionRejected) as err:
        add(imported.run_dir, "long-video", root=Path(__file__).parents[1] / "leaderboards")
    assert "imported from lmms-eval" in str(err.value)


def test_log_only_videomme(tmp_path) -> None:
    res = _import(tmp_path, data_dir=None, only=("videomme",))
    recs = store.load_records(res.run_dir / store.SAMPLES)
    assert {sid for _, sid in recs} == VIDEOMME_IDS
    rec = recs[("videomme", "001-1")]
    assert rec.gold == "A" and len(rec.options) == 4 and rec.categories["task_type"] == ["Temporal Perception"]
    assert res.tasks["videomme"].dataset["log_only"] is True
    assert any("logs alone" in n for n in res.notes)
    assert res.results.tasks["videomme"].n_scored == 12


def test_missing_release_says_what_to_pass(tmp_path) -> None:
    with pytest.raises(LmmsImportError, match=r"--data-dir mvbench=FOLDER"):
        _import(tmp_path, data_dir=None)


def _copy_fixture(tmp_path: Path) -> Path:
    dst = tmp_path / "lmms_out"
    shutil.copytree(FIXTURE, dst, ignore=shutil.ignore_patterns("releases", "*.md"))
    return dst


def test_unmatched_docs_stop_or_are_skipped(tmp_path) -> None:
    src = _copy_fixture(tmp_path)
    path = next(src.glob("*_samples_videomme_vambademo.jsonl"))
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    lines[0]["videomme_perception_score"]["question_id"] = "999-9"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(LmmsImportError, match=r"999-9 is not in the release.*--skip-unmatched"):
        import_lmms_eval(src, ImportOptions(out=tmp_path / "a", data_dir=str(RELEASES)))
    res = import_lmms_eval(src, ImportOptions(out=tmp_path / "b", data_dir=str(RELEASES), skip_unmatched=True))
    assert len([1 for (t, _) in store.load_records(res.run_dir / store.SAMPLES) if t == "videomme"]) == 17
    assert res.results.tasks["videomme"].n == 18 and any("match no release sample" in n for n in res.notes)


def test_content_matching_without_ids(tmp_path) -> None:
    """lvbench / mlvu logs carry no id: docs are matched by question + options text, in any order."""
    from vamba_eval.registry import get_task

    release = get_task("lvbench").write_demo(tmp_path / "lvbench", 0)
    samples = get_task("lvbench").load(release)
    out = tmp_path / "lmms_out"
    out.mkdir()
    logs = []
    for doc_id, s in enumerate(reversed(samples)):  # lmms-eval's repack order need not be ours
        prompt = s.question + "\n" + "\n".join(s.options) + "\nAnswer the question with the option letter"
        logs.append({"doc_id": doc_id, "target": s.answer, "filtered_resps": s.answer, "input": prompt,
                     "lvbench_score": True, "doc_hash": "x"})
    (out / "d_samples_lvbench.jsonl").write_text("".join(json.dumps(x) + "\n" for x in logs))
    (out / "d_results.json").write_text(json.dumps({"results": {"lvbench": {"lvbench_score,none": 1.0}},
                                                     "configs": {"lvbench": {"metric_list": [{"metric": "lvbench_score"}]}},
                                                     "config": {"model": "x", "model_args": ""}}))
    res = import_lmms_eval(out, ImportOptions(out=tmp_path / "run", data_dir={"lvbench": str(release)}))
    recs = store.load_records(res.run_dir / store.SAMPLES)
    assert {sid for _, sid in recs} == {s.sample_id for s in samples}
    assert all(r.correct for r in recs.values())  # each response is its own gold letter: mapped right
    sidecar = {json.loads(x)["sample_id"]: json.loads(x) for x in (res.run_dir / SIDECAR).read_text().splitlines()}
    assert sidecar[samples[0].sample_id]["doc_id"] == len(samples) - 1


def test_task_resolution() -> None:
    assert resolve("videomme").ours == "videomme" and resolve("videomme_w_subtitle").subtitles
    assert resolve("mlvu_dev").ours == "mlvu" and resolve("longvideobench_test_v").ours == "longvideobench_test"
    assert resolve("mvbench_action_count").subtask == "action_count"
    renamed = resolve("my_copy", {"metric_list": [{"metric": "mvbench_accuracy"}], "dataset_name": None,
                                  "lmms_eval_specific_kwargs": {"default": {"sub_task": "state_change"}}})
    assert (renamed.ours, renamed.subtask) == ("mvbench", "state_change")
    assert resolve("my_vm", {}, {"my_vm": "videomme"}).ours == "videomme"
    assert resolve("mmmu_val") is None


def test_output_errors(tmp_path) -> None:
    with pytest.raises(LmmsOutputError, match="--log_samples"):
        read_output(tmp_path)
    (tmp_path / "a_results.json").write_text(json.dumps({"results": {"videomme": {}}}))
    with pytest.raises(LmmsOutputError, match="re-run lmms-eval with --log_samples"):
        read_output(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b_results.json").write_text("{}")
    with pytest.raises(LmmsOutputError, match="2 lmms-eval evaluations found"):
        read_output(tmp_path)


def _app() -> typer.Typer:
    from vamba_eval.cli_interop import register

    app = typer.Typer()
    app.command("noop")(lambda: None)
    register(app)
    return app


def test_cli_import_and_parity(tmp_path, capsys) -> None:
    run = tmp_path / "cli_run"
    _app()(["import", "lmms-eval", str(FIXTURE), "--out", str(run), "--data-dir", str(RELEASES)], standalone_mode=False)
    assert {"config.json", "samples.jsonl", "results.json", "report.html", "parity.html", SIDECAR} <= \
        {p.name for p in run.iterdir()}
    assert "videomme" in capsys.readouterr().out
    _app()(["parity", str(run), "--out", str(tmp_path / "p.html")], standalone_mode=False)
    assert "6 of 18 verdicts differ" in capsys.readouterr().out and (tmp_path / "p.html").is_file()
    with pytest.raises(SystemExit) as exit_:
        _app()(["import", "lmms-eval", str(FIXTURE), "--out", str(run)], standalone_mode=False)
    assert exit_.value.code == 2 and "already holds a run" in capsys.readouterr().err
