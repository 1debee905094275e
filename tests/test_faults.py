"""Process faults (issue 10, item 3): nothing finished is lost, nothing is counted twice.

- The driver (`vamba-eval run`, a real subprocess on the demo data with the bundled tiny model)
  is SIGKILLed at seeded random points — during start-up, between and right after sample
  writes, while results/report are written — each time followed by ``--resume``; some kills also
  leave a torn last line (the file cut inside its final record, as a kill mid-``write`` would).
  The end state equals an uninterrupted run: results.json (minus run_id), every sample record
  (minus timings), no duplicate ids, every line valid JSON. Default tier: 3 kills; slow tier: 24
  kills while samples are produced + 3 while a finished run rewrites results.json and report.html.
- A full disk (ENOSPC simulated by monkeypatching ``os.write`` / ``os.fsync`` / the frame cache):
  a clear "the disk is full … --resume" error (exit 2), samples.jsonl still ends on a complete
  line, no temporary files left, and ``--resume`` afterwards completes identically.
- Ray actors SIGKILLed repeatedly while a run goes on (local cluster, 4 CPUs, 2 FAKE GPUs, the
  tiny model): the run completes with the results of the in-process executor (slow tier: 3 and 10
  kills). Default tier: the Ray executor's queue (Ray-free) under 40 seeded random schedules of
  completions, worker deaths and restarts never loses or repeats a unit.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_runs import cache_env, demo_cache  # noqa: E402
from fault_tools import ActorKiller, DiskFiller, n_lines, tear_last_line  # noqa: E402

from vamba_eval.run import store  # noqa: E402

TASKS = "lvbench,videomme"
IGNORED = ("timings", "peak_memory_bytes")


# -- helpers ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The shared demo cache (demo releases + decoded frames), also for the subprocesses."""
    with cache_env(demo_cache(tmp_path_factory)) as path:
        yield path


def clean_run(tmp_path_factory, name: str, **kw) -> Path:
    from vamba_eval import evaluate

    out = tmp_path_factory.mktemp("clean") / name
    evaluate(tasks=TASKS, output=str(out), progress=False, report=False, **kw)
    return out


@pytest.fixture(scope="module")
def clean5(cache, tmp_path_factory):
    return clean_run(tmp_path_factory, "limit5", limit=5)


def results_body(run_dir: Path) -> dict:
    data = json.loads((run_dir / store.RESULTS).read_text())
    data.pop("run_id")
    return data


def checked_lines(run_dir: Path) -> list[dict]:
    """Every line of samples.jsonl parses as JSON, the file ends on a newline, no id twice."""
    raw = (run_dir / store.SAMPLES).read_bytes()
    assert not raw or raw.endswith(b"\n"), "torn last line left in samples.jsonl"
    rows = [json.loads(line) for line in raw.decode("utf-8").splitlines()]  # raises on a bad line
    keys = [(r["task"], r["sample_id"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicate sample ids in samples.jsonl"
    return rows


def samples_body(run_dir: Path, drop: tuple[str, ...] = ()) -> dict:
    return {(r["task"], r["sample_id"]): {k: v for k, v in r.items() if k not in IGNORED + drop}
            for r in checked_lines(run_dir)}


def assert_same_run(got: Path, clean: Path, drop: tuple[str, ...] = ()) -> None:
    assert samples_body(got, drop) == samples_body(clean, drop)
    assert results_body(got) == results_body(clean)
    assert not [p.name for p in got.iterdir() if ".tmp" in p.name], "temporary files left behind"


def cli(out: Path, *extra: str, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vamba_eval.cli", "run", "--tasks", TASKS, "--output", str(out), *extra]
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=fh, env=os.environ.copy())


def kill_loop(out: Path, kills: int, seed: int, extra: tuple[str, ...], total: int, log: Path,
              late: int = 0) -> dict:
    """Start the run, SIGKILL it at a random point, resume, … until ``kills`` processes were
    killed while alive; then one last ``--resume`` runs to the end. ``late`` more kills then hit
    resumes of the finished run (while results.json / report.html are rewritten), each followed
    by another resume. Returns what happened."""
    rng = random.Random(seed)
    samples = out / store.SAMPLES
    stats = {"kills": 0, "finished_early": 0, "torn": 0, "modes": {}}
    for _ in range(4 * kills):
        if stats["kills"] >= kills:
            break
        proc = cli(out, *extra, *(["--resume"] if out.exists() else []), log=log)
        before = n_lines(samples)
        mode = rng.choice(["startup", "lines", "lines", "lines"] if before < total else ["startup", "done"])
        deadline = time.monotonic() + 300
        if mode == "startup":  # anywhere in start-up: imports, planning, config.json, model load
            time.sleep(rng.uniform(0.0, 4.0))
        elif mode == "done":  # all samples are in: results.json / report.html are being written
            time.sleep(rng.uniform(2.0, 9.0))
        else:  # right after the k-th new record (+ a few ms): between or during sample writes
            want = before + rng.randint(1, 3)
            while n_lines(samples) < want and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.choice([0.0, 0.0, rng.uniform(0.0, 0.05)]))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        if proc.wait() == -signal.SIGKILL:
            stats["kills"] += 1
            stats["modes"][mode] = stats["modes"].get(mode, 0) + 1
            if rng.random() < 0.3 and samples.exists():
                tear_last_line(samples, rng)
                stats["torn"] += 1
        else:
            assert proc.returncode == 0, log.read_text()[-3000:]
            stats["finished_early"] += 1
    assert stats["kills"] >= kills, stats
    proc = cli(out, *extra, "--resume", log=log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    for _ in range(4 * late):  # resumes of the finished run: start-up, then results.json and report.html
        if stats["modes"].get("late", 0) >= late:
            break
        t0 = time.monotonic()
        proc = cli(out, *extra, "--resume", log=log)
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
        took = time.monotonic() - t0  # this machine's time for such a resume, right now
        proc = cli(out, *extra, "--resume", log=log)
        time.sleep(rng.uniform(0.7, 0.97) * took)  # its last part: the writes
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        if proc.wait() == -signal.SIGKILL:
            stats["modes"]["late"] = stats["modes"].get("late", 0) + 1
            stats["kills"] += 1
    if late:
        assert stats["modes"].get("late", 0) >= 1, stats
        proc = cli(out, *extra, "--resume", log=log)
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    return stats


# -- (a) SIGKILL of the driver, then --resume -------------------------------------------------
def test_three_random_sigkills_then_resume_equal_a_clean_run(cache, clean5, tmp_path):
    out = tmp_path / "killed"
    stats = kill_loop(out, kills=3, seed=1234, extra=("--limit", "5", "--no-report"), total=10,
                      log=tmp_path / "stderr.log")
    assert_same_run(out, clean5)
    assert stats["kills"] == 3


@pytest.mark.slow
def test_twenty_four_random_sigkills_then_resume_equal_a_clean_run(cache, tmp_path_factory, tmp_path):
    """The whole demo of both tasks (95 samples), the report included: 24 kills at random points
    while samples are produced, then 3 more while a finished run re-writes results and report."""
    clean = clean_run(tmp_path_factory, "full")
    out = tmp_path / "killed"
    stats = kill_loop(out, kills=24, seed=20240610, extra=(), total=95, log=tmp_path / "stderr.log", late=3)
    assert_same_run(out, clean)
    assert (out / store.REPORT).is_file()
    assert stats["kills"] >= 25 and stats["modes"].get("lines", 0) >= 10, stats
    print(f"kill loop: {stats}")


def test_resume_repairs_a_tail_torn_at_every_byte(tmp_path):
    """``repair_tail`` on a file cut at every offset of its last record: the complete lines stay,
    the torn one goes, and the result always parses."""
    rec = {"task": "t", "sample_id": "s2", "response": "\u00e9\u4e2d\U0001f600 \"q\" \\n", "x": [1, 2.5, None]}
    head = (json.dumps({"task": "t", "sample_id": "s1"}) + "\n").encode()
    line = (json.dumps(rec, ensure_ascii=False) + "\n").encode()
    path = tmp_path / "s.jsonl"
    for cut in range(len(line) + 1):
        path.write_bytes(head + line[:cut])
        store.repair_tail(path)
        assert path.read_bytes() == (head + line if cut == len(line) else head), cut


# -- (b) disk full while writing ---------------------------------------------------------------
def _run_main(out: Path, *extra: str) -> None:
    from vamba_eval.cli import main

    main(["run", "--tasks", TASKS, "--limit", "3", "--output", str(out), "--no-report", *extra])


@pytest.fixture(scope="module")
def clean3(cache, tmp_path_factory):
    return clean_run(tmp_path_factory, "limit3", limit=3)


@pytest.mark.parametrize("how,ok,name", [("write", 2, store.SAMPLES), ("fsync", 4, store.SAMPLES),
                                         ("fsync", 0, ".results.json"), ("fsync", 0, ".config.json")])
def test_disk_full_is_a_clear_error_and_resumable(cache, clean3, tmp_path, monkeypatch, capsys, how, ok, name):
    out = tmp_path / "run"
    filler = DiskFiller(monkeypatch, how, ok, name)
    with pytest.raises(SystemExit) as exc:
        _run_main(out)
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and filler.full
    assert "the disk is full" in err and "--resume" in err and "Traceback" not in err, err
    if name == ".config.json":  # before any sample: nothing written at all
        assert not (out / store.CONFIG).exists() and not (out / store.SAMPLES).exists()
    else:
        assert len(checked_lines(out)) == (ok if name == store.SAMPLES else 6)  # nothing torn, nothing lost
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]
    _run_main(out, "--resume")
    assert_same_run(out, clean3)


def test_a_full_disk_in_the_frame_cache_is_not_recorded_as_a_sample_error(cache, clean3, tmp_path, monkeypatch,
                                                                          capsys):
    """A decode whose frame-cache write fails with ENOSPC would be a recorded OSError sample
    error (never re-run by --resume); it stops the run instead."""
    from vamba_eval.video import FrameCache

    seen = []

    def full_put(self, key, *args, **kwargs):
        seen.append(key)
        raise OSError(errno.ENOSPC, "No space left on device", str(self.file_for(key)))

    monkeypatch.setattr(FrameCache, "get_entry", lambda self, key: None)
    monkeypatch.setattr(FrameCache, "put", full_put)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        _run_main(out)
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and seen and "the disk is full" in err and "--resume" in err, err
    assert checked_lines(out) == []
    _run_main(out, "--resume")
    assert_same_run(out, clean3)


def test_a_full_disk_while_writing_a_frame_strip_stops_the_run(cache, clean3, tmp_path, monkeypatch, capsys):
    import vamba_eval.run.executor as executor

    calls = []

    def full(*args, **kwargs):
        calls.append(args)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(executor, "write_contact_sheet", full)
    out = tmp_path / "run"
    with pytest.raises(SystemExit):
        _run_main(out)
    monkeypatch.undo()
    assert "the disk is full" in capsys.readouterr().err
    assert len(checked_lines(out)) == 2
    _run_main(out, "--resume")
    assert_same_run(out, clean3)


def test_a_failed_append_leaves_no_torn_line(tmp_path, monkeypatch):
    """SampleWriter on its own: a short write followed by ENOSPC is cut back to the last newline."""
    from vamba_eval.records import SampleRecord

    path = tmp_path / store.SAMPLES
    rec = lambda i: SampleRecord(task="t", sample_id=f"s{i}", video="v", video_key="v", response="x" * 500)  # noqa: E731
    with store.SampleWriter(path) as writer:
        writer.append(rec(0))
        DiskFiller(monkeypatch, "write", ok=0)
        with pytest.raises(store.DiskFullError, match="the disk is full"):
            writer.append(rec(1))
        monkeypatch.undo()
        writer.append(rec(2))
    assert [r["sample_id"] for r in checked_lines(tmp_path)] == ["s0", "s2"]


# -- (c) Ray actors killed repeatedly -----------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    temp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # unix socket paths must stay < 107 bytes
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, object_store_memory=100 * 1024 ** 2,
             _temp_dir=temp, logging_level="warning")
    yield ray
    ray.shutdown()


def _ray_run_with_kills(cluster, out: Path, kills: int, seed: int, limit) -> ActorKiller:
    from vamba_eval import evaluate

    killer = ActorKiller(out / store.SAMPLES, kills, seed, (0.0, 0.2))
    out.mkdir(parents=True)
    killer.start()
    try:
        evaluate(tasks=TASKS, limit=limit, output=str(out), progress=False, report=False, executor="ray",
                 gpus=2, max_restarts=kills + 1, max_attempts=kills + 2)
    finally:
        killer.stop.set()
        killer.join()
    return killer


def _check_ray(out: Path, clean: Path, killer: ActorKiller, kills: int) -> None:
    assert len(killer.killed) == kills
    assert_same_run(out, clean, drop=("attempt",))  # ``attempt`` records the re-dispatch
    rows = checked_lines(out)
    assert all(r["error"] is None for r in rows)
    sessions = json.loads((out / "workers.json").read_text())["sessions"]
    assert sessions[-1]["worker_deaths"] == kills


@pytest.mark.slow
def test_ray_actors_killed_three_times_the_run_completes_identically(cluster, cache, tmp_path_factory, tmp_path):
    clean = clean_run(tmp_path_factory, "limit8", limit=8)
    out = tmp_path / "ray"
    killer = _ray_run_with_kills(cluster, out, kills=3, seed=7, limit=8)
    _check_ray(out, clean, killer, 3)


@pytest.mark.slow
def test_ray_actors_killed_ten_times_the_run_completes_identically(cluster, cache, tmp_path_factory, tmp_path):
    """The whole demo of both tasks (95 samples): a kill after every few records."""
    clean = clean_run(tmp_path_factory, "full-ray")
    out = tmp_path / "ray"
    killer = _ray_run_with_kills(cluster, out, kills=10, seed=11, limit=None)
    _check_ray(out, clean, killer, 10)


@pytest.mark.parametrize("seed", range(40))
def test_the_queue_loses_and_repeats_nothing_under_random_worker_deaths(seed):
    """The Ray executor's queue (Ray-free) driven by a seeded random schedule of completions,
    worker deaths and restarts: every unit ends exactly once — finished, or recorded as failed
    after ``max_attempts`` dispatches — and no finished unit is dispatched again."""
    from vamba_eval.run.dispatch import Dispatcher
    from vamba_eval.run.process import WorkUnit
    from vamba_eval.types import Sample, VideoRef
    from vamba_eval.video import FrameSpec

    rng = random.Random(seed)
    units = [WorkUnit("t", Sample("t", f"s{i}", VideoRef("v.mp4"), "q", ("A", "B"), "A"), FrameSpec(8), "/",
                      rng.uniform(1, 10)) for i in range(rng.randint(1, 40))]
    max_attempts = rng.randint(1, 4)
    disp = Dispatcher(units, max_attempts=max_attempts, depth=rng.randint(1, 3))
    workers = rng.randint(1, 3)
    for w in range(workers):
        disp.add_worker(w)
    ended: list[tuple[str, str]] = []
    deaths = 0
    for _ in range(10_000):
        if disp.done():
            break
        for _w, job in disp.assign():
            assert job.key not in ended and job.attempt <= max_attempts
        held = [(w, k) for w, jobs in disp.held.items() for k in jobs]
        if held and rng.random() < 0.15:  # a worker is SIGKILLed, then replaced
            w = rng.choice(held)[0]
            ended += [j.key for j in disp.worker_died(w)]
            deaths += 1
            disp.add_worker(w)
        elif held:
            w, key = rng.choice(held)
            disp.finished(w, key)
            ended.append(key)
    assert disp.done(), "the queue stalled"
    assert sorted(ended) == sorted(u.key for u in units)  # each unit exactly once
