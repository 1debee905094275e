"""`vamba-eval export`: official submission files from a run's saved responses."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import typer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_runs import demo_run  # noqa: E402

from vamba_eval.cli_extra import register  # noqa: E402
from vamba_eval.export import FORMATS, ExportError, ExportFormat, export  # noqa: E402
from vamba_eval.run import store  # noqa: E402
from vamba_eval.tasks.lvbench import polish_answer  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return demo_run(tmp_path_factory, "demo", tasks="lvbench,videomme", limit=4)


def records(run: Path, task: str):
    return {sid: r for (t, sid), r in store.load_records(run / store.SAMPLES).items() if t == task}


def test_lvbench_uid_to_letter(run_dir: Path, tmp_path: Path):
    res = export(run_dir, "lvbench", tmp_path / "lv.json")
    data = json.loads(res.path.read_text(encoding="utf-8"))
    recs = records(run_dir, "lvbench")
    assert set(data) == {sid for sid, r in recs.items() if r.error is None}
    assert all(isinstance(k, str) and isinstance(v, str) and len(v) <= 1 for k, v in data.items())
    assert all(data[sid] == polish_answer(recs[sid].response or "") for sid in data)
    assert any("synthetic" in w for w in res.warnings) and any("--limit" in w for w in res.warnings)


def test_videomme_results_file_shape(run_dir: Path):
    res = export(run_dir, "videomme")
    assert res.path == run_dir / "submissions" / "videomme_results.json"
    data = json.loads(res.path.read_text(encoding="utf-8"))  # valid JSON (the official template is not)
    recs = records(run_dir, "videomme")
    assert isinstance(data, list) and data
    seen = {}
    for video in data:
        assert {"video_id", "duration_category", "video_category", "video_subcategory", "questions"} <= set(video)
        assert video["duration_category"] in ("short", "medium", "long")
        for q in video["questions"]:
            assert {"question_id", "task_type", "question", "choices", "answer", "response"} <= set(q)
            assert len(q["choices"]) == 4 and q["choices"][0].startswith("A.")
            assert q["question"]  # read back from the release folder
            seen[q["question_id"]] = q["response"]
            assert video["video_id"] == recs[q["question_id"]].video_key
    assert seen == {sid: r.response or "" for sid, r in recs.items()}


def test_videomme_without_release_folder_still_exports(run_dir: Path, tmp_path: Path):
    copy = tmp_path / "moved"
    shutil.copytree(run_dir, copy)
    conf = json.loads((copy / "config.json").read_text())
    conf["environment"]["datasets"]["videomme"]["path"] = str(tmp_path / "gone")
    (copy / "config.json").write_text(json.dumps(conf))
    res = export(copy, "videomme")
    data = json.loads(res.path.read_text(encoding="utf-8"))
    assert sum(len(v["questions"]) for v in data) == len(records(copy, "videomme"))
    assert any("release folder not readable" in w for w in res.warnings)


def test_registry_errors_are_clear(run_dir: Path, monkeypatch):
    with pytest.raises(ExportError, match="Known export formats"):
        export(run_dir, "lvbenhc")
    monkeypatch.setitem(FORMATS, "fake", ExportFormat("fake", "lvbench", "no_such_hook", "records", lambda f, i: f(),
                                                      "x.json", "test"))
    with pytest.raises(ExportError, match=r"tasks/lvbench.py to provide `no_such_hook\(records\)`.*does not provide"):
        export(run_dir, "fake")
    monkeypatch.setitem(FORMATS, "ghost", ExportFormat("ghost", "ghosttask", "submission", "records",
                                                       lambda f, i: f(), "x.json", "test"))
    with pytest.raises(ExportError, match="not installed yet"):
        export(run_dir, "ghost")
    with pytest.raises(ExportError, match="no mvbench samples"):
        export(run_dir, "mvbench")


def test_every_registered_format_finds_its_hook():
    from vamba_eval.export import find_hook
    from vamba_eval.registry import task_names

    for fmt in FORMATS.values():
        if fmt.task in task_names():  # modules still being written are skipped, not failed
            assert callable(find_hook(fmt)), fmt.name


def test_cli_export(run_dir: Path, tmp_path: Path, capsys):
    app = typer.Typer(add_completion=False)
    app.command("noop")(lambda: None)
    register(app)
    app(args=["export", str(run_dir), "--format", "lvbench", "-o", str(tmp_path / "s.json")], standalone_mode=False)
    assert (tmp_path / "s.json").is_file() and "entries" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        app(args=["export", str(run_dir), "--format", "nope"], standalone_mode=False)
    assert exc.value.code == 2
