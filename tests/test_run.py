"""The main job end to end on the built-in demo data: run, resume after SIGKILL, score, report, CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vamba_eval import evaluate
from vamba_eval.cli import main
from vamba_eval.run import store
from vamba_eval.run.api import rescore

LIMIT = 5  # samples per task: keeps each run to a few seconds


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    old = os.environ.get("VAMBA_EVAL_CACHE")
    os.environ["VAMBA_EVAL_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("VAMBA_EVAL_CACHE", None)
    else:
        os.environ["VAMBA_EVAL_CACHE"] = old


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "clean"
    res = evaluate(tasks="lvbench,videomme", limit=LIMIT, output=str(out), progress=False)
    return out, res


def results_body(run_dir: Path) -> dict:
    data = json.loads((run_dir / store.RESULTS).read_text())
    data.pop("run_id")
    return data


def test_run_writes_every_artifact(clean_run):
    out, res = clean_run
    for name in (store.CONFIG, store.SAMPLES, store.RESULTS, store.REPORT):
        assert (out / name).is_file(), name
    conf = json.loads((out / store.CONFIG).read_text())
    assert conf["environment"]["ssm_backend"] == "torch"
    assert conf["model"]["untrained"] is False and conf["model"]["bundled"] is True  # the shipped vamba-tiny
    ds = conf["environment"]["datasets"]["lvbench"]
    assert ds["synthetic"] and "not LVBench" in ds["notice"] and ds["revision"].startswith("sha256:")
    assert res.synthetic
    lines = (out / store.SAMPLES).read_text().splitlines()
    assert len(lines) == 2 * LIMIT
    rec = json.loads(lines[0])
    assert rec["frame_indices"] and rec["prompt_hash"] and rec["response"] is not None
    assert set(res.tasks) == {"lvbench", "videomme"}
    lv = res.tasks["lvbench"]
    assert lv.n == LIMIT and lv.n_failed == 0 and "question_type" in lv.breakdowns
    assert set(res.tasks["videomme"].breakdowns) == {"duration", "domain", "sub_category", "task_type"}
    html = (out / store.REPORT).read_text()
    assert "not LVBench" in html and "BUNDLED TINY MODEL" in html and "never seen real video" in html
    assert (out / "thumbs" / "lvbench").is_dir()


def test_rerun_into_the_same_folder_needs_resume(clean_run):
    out, _ = clean_run
    with pytest.raises(store.RunDirError, match="--resume"):
        evaluate(tasks="lvbench,videomme", limit=LIMIT, output=str(out), progress=False)


def test_resume_with_other_settings_is_refused(clean_run, tmp_path):
    out, _ = clean_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with pytest.raises(store.RunDirError, match="frames"):
        evaluate(tasks="lvbench,videomme", limit=LIMIT, output=str(copy), resume=True, frames=4, progress=False)


def test_resume_of_a_finished_run_changes_nothing(clean_run, tmp_path):
    out, _ = clean_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = (copy / store.SAMPLES).read_bytes()
    evaluate(tasks="lvbench,videomme", limit=LIMIT, output=str(copy), resume=True, progress=False)
    assert (copy / store.SAMPLES).read_bytes() == before
    assert results_body(copy) == results_body(out)


def _run_cli(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vamba_eval.cli", "run", "--tasks", "lvbench,videomme", "--limit", str(LIMIT),
           "--output", str(out), "--no-report", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.parametrize("kill_after", [0, 3])
def test_sigkill_then_resume_equals_a_clean_run(clean_run, tmp_path, kill_after):
    out = tmp_path / "killed"
    proc = _run_cli(out)
    deadline = time.monotonic() + 120
    while _lines(out / store.SAMPLES) < kill_after and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    out.mkdir(parents=True, exist_ok=True)  # a kill at 0 may come before the run made its folder
    with open(out / store.SAMPLES, "ab") as fh:  # and a torn half-line, as a kill mid-write leaves
        fh.write(b'{"task": "lvbench", "sample_id": "tor')
    assert _lines(out / store.SAMPLES) < 2 * LIMIT
    done = _run_cli(out, "--resume")
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err.decode()[-2000:]
    ids = [json.loads(line)["sample_id"] for line in (out / store.SAMPLES).read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 2 * LIMIT  # no duplicates, nothing torn
    assert results_body(out) == results_body(clean_run[0])


def test_score_from_disk_reproduces_and_switches_mode(clean_run, tmp_path):
    out, res = clean_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    again = rescore(copy)
    assert again.model_dump(exclude={"run_id"}) == res.model_dump(exclude={"run_id"})
    lmms = rescore(copy, "lmms-eval")
    vm = lmms.tasks["videomme"]
    assert vm.scoring == "lmms-eval"
    assert vm.n_scored == vm.n - vm.n_failed  # lmms-eval counts unparsed answers as wrong


def test_missing_and_corrupt_videos_become_recorded_errors(tmp_path):
    from vamba_eval.registry import get_task

    data = get_task("lvbench").write_demo(tmp_path / "lvbench", 0)
    videos = sorted((data / "videos").glob("*.mp4"))
    videos[0].unlink()
    videos[1].write_bytes(videos[1].read_bytes()[:300])  # truncated
    res = evaluate(tasks="lvbench", data_dir=str(data), output=str(tmp_path / "run"), progress=False, frames=4)
    lv = res.tasks["lvbench"]
    assert lv.n == 50 and lv.n_failed == 10 and lv.n_scored == 40  # 5 questions per video
    recs = [json.loads(x) for x in (tmp_path / "run" / store.SAMPLES).read_text().splitlines()]
    errors = {r["error"]["type"] for r in recs if r["error"]}
    assert errors == {"VideoNotFound", "VideoUnreadable"}
    assert all(r["correct"] is None for r in recs if r["error"])
    assert videos[0].name in (tmp_path / "run" / store.REPORT).read_text()


def test_cli_did_you_mean_and_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--tasks", "lvbnech", "--output", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "Did you mean: lvbench" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--tasks", "lvbench", "--model", "vamab", "--output", str(tmp_path / "y")])
    assert "Did you mean: vamba?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--tasks", "lvbench", "--data-dir", str(tmp_path / "nowhere"), "--output", str(tmp_path / "z")])
    assert "nowhere" in capsys.readouterr().err


def test_cli_unknown_option_is_a_usage_error_not_a_traceback(tmp_path, capsys):
    # typer ≥ 0.25 raises its vendored click's exceptions, which are not click.ClickException
    with pytest.raises(SystemExit) as exc:
        main(["run", "--tasks", "lvbench", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "No such option: --out" in err and "Traceback" not in err


def test_config_file_and_flags(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("tasks: videomme\nlimit: 2\nframes: 4\nscoring: lmms-eval\n")
    main(["run", "--config", str(cfg), "--limit", "3", "--output", str(tmp_path / "r"), "--no-report"])
    conf = json.loads((tmp_path / "r" / store.CONFIG).read_text())["config"]
    assert conf["limit"] == 3 and conf["frames"] == 4 and conf["scoring"] == "lmms-eval"
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: videomme\nframez: 4\n")
    with pytest.raises(SystemExit):
        main(["run", "--config", str(bad)])
    assert "framez" in capsys.readouterr().err


def test_list_and_demo_data(tmp_path, capsys):
    main(["list", "tasks"])
    out = capsys.readouterr().out
    assert "lvbench" in out and "videomme" in out
    main(["demo-data", str(tmp_path / "demo")])
    assert (tmp_path / "demo" / "lvbench" / "video_info.meta.jsonl").is_file()
    assert (tmp_path / "demo" / "videomme" / "videomme" / "test-00000-of-00001.parquet").is_file()


def test_release_from_the_hugging_face_cache(tmp_path, monkeypatch):
    """--data-dir videomme=hf:ID@REV reads a snapshot of the local hub cache (never the network)."""
    from vamba_eval.registry import get_task

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "datasets--lmms-lab--Video-MME"
    get_task("videomme").write_demo(repo / "snapshots" / commit, 0)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    out = tmp_path / "run"
    evaluate(tasks="videomme", data_dir={"videomme": f"hf:lmms-lab/Video-MME@{commit}"}, limit=2, frames=4,
             output=str(out), progress=False, report=False)
    ds = json.loads((out / store.CONFIG).read_text())["environment"]["datasets"]["videomme"]
    assert ds["revision"] == commit and not ds["synthetic"]
    with pytest.raises(Exception, match="no usable snapshot"):
        evaluate(tasks="videomme", data_dir={"videomme": "hf:lmms-lab/Video-MME@" + "f" * 40}, limit=2,
                 output=str(tmp_path / "run2"), progress=False, report=False)
