"""The Ray executor against the in-process one on the demo data, its fault handling, and the
Ray-free queue bookkeeping. One local Ray cluster (4 CPUs, 2 FAKE GPUs) serves the whole module:
each actor gets its own CUDA_VISIBLE_DEVICES while the models run on the CPU."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

from vamba_eval.models.base import ModelAdapter, ModelSpec
from vamba_eval.records import SampleError, SampleRecord
from vamba_eval.run.dispatch import (Dispatcher, ExecutorChoiceError, RayOptions, RayStats, WorkerStats,
                                     choose_executor, plan_workers, record_worker_stats, run_with_oom_retry)
from vamba_eval.run.process import WorkUnit
from vamba_eval.types import Prediction, Request

LIMIT = 4  # per task: 8 units, 4 per fake GPU


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Demo plans and units for lvbench + videomme (planned by the real planner)."""
    from vamba_eval.run.config import RunConfig
    from vamba_eval.run.plan import plan_task, work_units

    root = tmp_path_factory.mktemp("cache")
    old = os.environ.get("VAMBA_EVAL_CACHE")
    os.environ["VAMBA_EVAL_CACHE"] = str(root)
    cfg = RunConfig(tasks=["lvbench", "videomme"], limit=LIMIT, progress=False)
    plans = [plan_task(name, cfg) for name in cfg.tasks]
    yield plans, work_units(plans, set()), root
    if old is None:
        os.environ.pop("VAMBA_EVAL_CACHE", None)
    else:
        os.environ["VAMBA_EVAL_CACHE"] = old


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    temp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # unix socket paths must stay < 107 bytes
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, object_store_memory=100 * 1024 ** 2,
             _temp_dir=temp, logging_level="warning")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # FakeModel → the actors
    yield ray
    ray.shutdown()


def _settings(plans, spec: ModelSpec, factory=None, cache: Path | None = None, **kw):
    from vamba_eval.run.worker import WorkerSettings

    return WorkerSettings(model_spec=spec, max_new_tokens={p.task.name: p.max_new_tokens for p in plans},
                          use_subtitles=False, scoring="official", model_factory=factory,
                          cache_dir=str(cache / "frames") if cache else None, **kw)


def _run_local(plans, units, model) -> dict:
    from vamba_eval.run.executor import run_local
    from vamba_eval.video import FrameCache

    out: dict = {}
    run_local(units, {p.task.name: p.task for p in plans}, model, lambda r: out.setdefault((r.task, r.sample_id), r),
              use_subtitles=False, scoring="official", max_new_tokens={p.task.name: p.max_new_tokens for p in plans},
              cache=FrameCache(Path(os.environ["VAMBA_EVAL_CACHE"]) / "frames"))
    return out


def _results(plans, records: dict):
    from vamba_eval.run.api import results_from_records

    return results_from_records(records, [p.task.name for p in plans], {p.task.name: len(p.samples) for p in plans},
                                "official", "run", "hash", True).model_dump(mode="json")


def _same_samples(a: dict, b: dict, drop=()) -> None:
    from vamba_eval.run.worker import comparable

    assert set(a) == set(b)
    for key in a:
        left, right = comparable(a[key]), comparable(b[key])
        for name in drop:
            left.pop(name), right.pop(name)
        assert left == right, key


class FakeModel(ModelAdapter):
    """Deterministic and fast; ``poison`` kills its own process on that sample; more than
    ``oom_above`` frames raise a CUDA-style out-of-memory error."""

    def __init__(self, spec: ModelSpec, poison: str | None = None, delay: float = 0.05,
                 oom_above: int | None = None) -> None:
        self.poison, self.delay, self.oom_above = poison, delay, oom_above

    def generate(self, batch: list[Request]) -> list[Prediction]:
        import torch

        out = []
        for req in batch:
            if req.sample_id == self.poison:
                os._exit(3)
            if self.oom_above is not None and len(req.frames) > self.oom_above:
                raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(req.frames)} GiB")
            time.sleep(self.delay)
            out.append(Prediction(text="ABCD"[len(req.frames) % 4], prompt_tokens=len(req.prompt.user)))
        return out

    def describe(self) -> dict:
        return {"name": "fake"}


@dataclasses.dataclass(frozen=True)
class FakeFactory:
    poison: str | None = None
    delay: float = 0.05

    def __call__(self, spec: ModelSpec) -> FakeModel:
        return FakeModel(spec, self.poison, self.delay)


@dataclasses.dataclass(frozen=True)
class FakeOOM:
    oom_above: int

    def __call__(self, spec: ModelSpec) -> FakeModel:
        return FakeModel(spec, delay=0, oom_above=self.oom_above)


class BrokenFactory:
    def __call__(self, spec: ModelSpec) -> FakeModel:
        raise FileNotFoundError("no checkpoint at /nope")


# -- Ray: equality with the in-process executor ---------------------------------------------------
@pytest.fixture(scope="module")
def vamba_local(demo):
    from vamba_eval.registry import get_model_factory

    plans, units, _ = demo
    return _run_local(plans, units, get_model_factory("vamba")(ModelSpec("vamba")))


def test_ray_matches_in_process_on_the_demo_data(cluster, demo, vamba_local, tmp_path):
    from vamba_eval.run.ray_executor import run_ray

    plans, units, cache = demo
    got: dict = {}
    stats = run_ray(units, _settings(plans, ModelSpec("vamba"), cache=cache, thumbs=True),
                    RayOptions(gpus=2, progress=False), lambda r: got.setdefault((r.task, r.sample_id), r), thumbs=tmp_path / "thumbs")
    _same_samples(vamba_local, got)
    assert _results(plans, got) == _results(plans, vamba_local)
    assert all(r.attempt == 1 and r.error is None for r in got.values())
    assert sorted(g for w in stats.workers for g in w.gpu_ids) == ["0", "1"]  # one fake GPU each
    assert all(w.samples >= 2 and w.busy_s > 0 for w in stats.workers) and stats.samples == len(units)
    assert len(list((tmp_path / "thumbs").rglob("*.jpg"))) == len(units)
    record_worker_stats(tmp_path, stats)
    record_worker_stats(tmp_path, stats)  # a resumed run adds a session
    sessions = json.loads((tmp_path / "workers.json").read_text())["sessions"]
    assert len(sessions) == 2 and sessions[0]["workers"][0]["utilization"] is not None


POISON = "poison-1"  # a copy of a demo unit under this id kills the fake worker that runs it


@pytest.fixture(scope="module")
def fake_local(demo):
    plans, units, _ = demo
    return _run_local(plans, units, FakeModel(ModelSpec("fake")))


@pytest.fixture(scope="module")
def fake_executor(cluster, demo):
    """Two CPU workers (0.5 CPU each: they fit beside the GPU tests) running FakeModel."""
    from vamba_eval.run.ray_executor import RayExecutor

    plans, _, cache = demo
    opts = RayOptions(cpu_workers=2, cpus_per_worker=0.5, max_attempts=2, max_restarts=3, progress=False)
    with RayExecutor(_settings(plans, ModelSpec("fake"), FakeFactory(POISON), cache), opts) as ex:
        yield ex


def test_killed_worker_is_restarted_and_its_samples_requeued(demo, fake_executor, fake_local):
    plans, units, _ = demo
    ex, got, killed = fake_executor, {}, []

    def on_record(rec: SampleRecord) -> None:
        got.setdefault((rec.task, rec.sample_id), rec)
        if len(got) == 2 and not killed:
            killed.append(ex.pids()[0])
            os.kill(killed[0], signal.SIGKILL)

    stats = ex.run(units, on_record)
    assert killed and stats.worker_deaths == 1 and stats.workers[0].restarts == 1 and stats.requeued >= 1
    assert any(r.attempt == 2 for r in got.values()) and all(r.error is None for r in got.values())
    _same_samples(fake_local, got, drop=("attempt",))
    assert _results(plans, got) == _results(plans, fake_local)
    ex.wait_started()  # the replacement is up (the run may have ended before it was)
    assert ex.pids()[0] != killed[0] and stats.workers[0].pids[-1] == ex.pids()[0]


def test_a_sample_that_always_kills_its_worker_becomes_an_error(demo, fake_executor, fake_local):
    plans, units, _ = demo
    poison = dataclasses.replace(units[2], sample=dataclasses.replace(units[2].sample, sample_id=POISON))
    got: dict = {}
    stats = fake_executor.run([*units[:2], poison, *units[2:]], lambda r: got.setdefault((r.task, r.sample_id), r))
    bad = got.pop(poison.key)
    assert bad.error is not None and bad.error.type == "WorkerDied" and bad.attempt == 2 and bad.correct is None
    assert stats.worker_deaths == 2 and all(r.error is None for r in got.values())
    _same_samples(fake_local, got, drop=("attempt",))  # neighbours in flight at the first death re-ran


def test_ctrl_c_keeps_what_finished_and_a_resume_completes_the_run(demo, fake_executor, fake_local):
    plans, units, _ = demo
    got: dict = {}

    def on_record(rec: SampleRecord) -> None:
        got.setdefault((rec.task, rec.sample_id), rec)
        if len(got) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fake_executor.run(units, on_record)
    assert len(got) == 3 and not fake_executor.calls
    rest = [u for u in units if u.key not in got]  # what work_units(plans, done) gives on --resume
    fake_executor.run(rest, lambda r: got.setdefault((r.task, r.sample_id), r))
    _same_samples(fake_local, got)


def test_unsatisfiable_gpu_request_fails_at_once(cluster, demo):
    from vamba_eval.run.ray_executor import run_ray

    plans, units, _ = demo
    t0 = time.monotonic()
    with pytest.raises(ExecutorChoiceError, match="--gpus 3: the local Ray cluster has 2 GPU"):  # no hang
        run_ray(units, _settings(plans, ModelSpec("fake"), FakeFactory()), RayOptions(gpus=3), lambda r: None)
    assert time.monotonic() - t0 < 10


def test_a_model_that_cannot_load_is_a_clear_error(cluster, demo):
    from vamba_eval.run.ray_executor import RayExecutorError, run_ray

    plans, units, _ = demo
    opts = RayOptions(cpu_workers=1, cpus_per_worker=0.5, progress=False)
    with pytest.raises(RayExecutorError, match="could not load the model 'fake'.*no checkpoint at /nope"):
        run_ray(units, _settings(plans, ModelSpec("fake"), BrokenFactory()), opts, lambda r: None)


def _cuda_gpus() -> int:
    import torch

    return torch.cuda.device_count()


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_gpus() < 2, reason="needs 2 CUDA GPUs")
def test_real_gpus(demo, vamba_local):
    """Run deliberately on a machine with >= 2 CUDA GPUs: pytest -m gpu tests/test_ray_executor.py."""
    from vamba_eval.run.ray_executor import run_ray

    plans, units, cache = demo
    got: dict = {}
    stats = run_ray(units, _settings(plans, ModelSpec("vamba", device="cuda", dtype="float32"), cache=cache),
                    RayOptions(gpus=2, progress=False), lambda r: got.setdefault((r.task, r.sample_id), r))
    assert set(got) == set(vamba_local) and all(r.error is None for r in got.values())
    assert all(r.peak_memory_bytes for r in got.values()) and len(stats.workers) == 2


# -- Ray-free: executor choice, resources, queue bookkeeping, OOM retry ------------------------
def test_auto_picks_local_unless_several_gpus_or_an_address():
    assert choose_executor("auto", gpus=None, address=None, ray_available=True) == "local"
    assert choose_executor("auto", gpus=1, address=None, ray_available=True) == "local"
    assert choose_executor("auto", gpus=2, address=None, ray_available=True) == "ray"
    assert choose_executor("auto", gpus=None, address="auto", ray_available=True) == "ray"
    assert choose_executor("ray", gpus=None, address=None, ray_available=True) == "ray"
    assert choose_executor("auto", gpus=None, address=None, ray_available=False) == "local"
    with pytest.raises(ExecutorChoiceError, match="pip install"):
        choose_executor("auto", gpus=4, address=None, ray_available=False)
    with pytest.raises(ExecutorChoiceError, match="--executor ray"):
        choose_executor("local", gpus=2, address=None, ray_available=True)


def test_worker_planning_and_gpu_less_clusters():
    cpu_only = {"CPU": 4.0}
    with pytest.raises(ExecutorChoiceError, match="has 0 GPU"):
        plan_workers(RayOptions(gpus=2), "cuda", cpu_only)
    with pytest.raises(ExecutorChoiceError, match="no GPUs"):
        plan_workers(RayOptions(), "cuda", cpu_only)
    assert plan_workers(RayOptions(cpu_workers=3), "cpu", cpu_only) == (3, {"num_gpus": 0.0, "num_cpus": 1.0})
    with pytest.raises(ExecutorChoiceError, match="need 5 CPUs"):
        plan_workers(RayOptions(cpu_workers=5), "cpu", cpu_only)
    n, per = plan_workers(RayOptions(gpus_per_worker=0.5, cpus_per_worker=0.5), "cuda", {"CPU": 4, "GPU": 2})
    assert n == 4 and per["num_gpus"] == 0.5


def _units(costs: list[float]) -> list[WorkUnit]:
    from vamba_eval.types import Sample, VideoRef
    from vamba_eval.video import FrameSpec

    return [WorkUnit("t", Sample("t", f"s{i}", VideoRef("v.mp4"), "q", ("A", "B"), "A"), FrameSpec(8), "/", c)
            for i, c in enumerate(costs)]


def test_dispatch_longest_first_spread_over_workers():
    d = Dispatcher(_units([1, 5, 3, 5, 2]), depth=2)
    d.add_worker(0), d.add_worker(1)
    first = d.assign()
    assert [(w, j.unit.sample.sample_id) for w, j in first] == [(0, "s1"), (1, "s3"), (0, "s2"), (1, "s4")]
    assert d.assign() == []  # both workers full
    d.finished(1, ("t", "s3"))
    assert [(w, j.unit.sample.sample_id) for w, j in d.assign()] == [(1, "s0")]
    for w, key in [(0, "s1"), (0, "s2"), (1, "s4"), (1, "s0")]:
        d.finished(w, ("t", key))
    assert d.done()


def test_dispatch_requeue_runs_suspects_alone_and_stops_at_the_limit():
    d = Dispatcher(_units([9, 8, 7, 6, 5]), max_attempts=2, depth=2)
    d.add_worker(0), d.add_worker(1)
    d.assign()  # 0: s0 s2 · 1: s1 s3
    assert d.worker_died(0) == [] and d.requeued == 2 and d.pending() == 3
    d.add_worker(0)  # the replacement is ready
    got = d.assign()
    assert [(w, j.unit.sample.sample_id, j.attempt) for w, j in got] == [(0, "s0", 2)]  # alone on the idle worker
    assert d.assign() == []  # s2 (suspect) waits for an idle worker; worker 1 is drained for it
    d.finished(1, ("t", "s1")), d.finished(1, ("t", "s3"))
    assert [(w, j.unit.sample.sample_id, j.attempt) for w, j in d.assign()] == [(1, "s2", 2)]
    exhausted = d.worker_died(0)  # s0 was on its 2nd (= last) attempt
    assert [j.unit.sample.sample_id for j in exhausted] == ["s0"] and exhausted[0].attempt == 2
    d.add_worker(0)
    assert [(w, j.unit.sample.sample_id) for w, j in d.assign()] == [(0, "s4")]
    d.finished(0, ("t", "s4")), d.finished(1, ("t", "s2"))
    assert d.done()


def test_oom_is_recorded_with_the_frame_count_and_optionally_halved():
    unit = _units([1])[0]
    unit = dataclasses.replace(unit, spec=dataclasses.replace(unit.spec, num_frames=16))
    seen: list[int] = []

    def run(u: WorkUnit) -> SampleRecord:
        seen.append(u.spec.num_frames)
        if u.spec.num_frames > 4:
            return SampleRecord(task="t", sample_id="s0", video="v", video_key="v",
                                error=SampleError(type="OutOfMemoryError", message="CUDA out of memory."))
        return SampleRecord(task="t", sample_id="s0", video="v", video_key="v", correct=True, flags=["x"])

    rec = run_with_oom_retry(unit, run, halvings=0)
    assert seen == [16] and rec.error.message.endswith("(CUDA out of memory with 16 frames)")
    seen.clear()
    rec = run_with_oom_retry(unit, run, halvings=1)
    assert seen == [16, 8] and "with 8 frames; first tried 16" in rec.error.message
    seen.clear()
    rec = run_with_oom_retry(unit, run, halvings=3)
    assert seen == [16, 8, 4] and rec.correct and rec.flags == ["oom_retry:frames=16->4", "x"]


def test_worker_body_in_process_matches_run_local_and_retries_ooms(demo, fake_local, tmp_path):
    """The actor body without Ray: same records as run_local; an OOM names the frame count and,
    with oom_retry_frames, re-runs the sample on half the frames."""
    from vamba_eval.run.worker import EvalWorker, comparable

    plans, units, cache = demo
    worker = EvalWorker(_settings(plans, ModelSpec("fake"), FakeFactory(delay=0), cache, thumbs=True))
    out = worker.process(units[0], 1)
    rec = SampleRecord.model_validate_json(out["record"])
    assert comparable(rec) == comparable(fake_local[units[0].key]) and out["thumb"][:2] == b"\xff\xd8"
    frames = units[0].spec.num_frames
    oom = EvalWorker(_settings(plans, ModelSpec("fake"), FakeOOM(frames - 1), cache))
    rec = SampleRecord.model_validate_json(oom.process(units[0], 1)["record"])
    assert rec.error.type == "OutOfMemoryError" and f"with {frames} frames" in rec.error.message
    retry = EvalWorker(_settings(plans, ModelSpec("fake"), FakeOOM(frames - 1), cache, oom_retry_frames=2))
    rec = SampleRecord.model_validate_json(retry.process(units[0], 2)["record"])
    assert rec.error is None and rec.attempt == 2 and len(rec.frame_indices) == frames // 2
    assert f"oom_retry:frames={frames}->{frames // 2}" in rec.flags


def test_worker_stats_record(tmp_path):
    stats = RayStats(workers=[WorkerStats(0, samples=4, busy_s=2.0)], wall_s=4.0, samples=4)
    row = stats.as_dict()["workers"][0]
    assert row["utilization"] == 0.5 and row["throughput_per_s"] == 1.0


def test_only_the_ray_executor_imports_ray():
    import re

    root = Path(__file__).resolve().parents[1] / "vamba_eval"
    pattern = re.compile(r"^\s*(import ray\b|from ray\b)", re.M)
    users = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if pattern.search(p.read_text()))
    assert users == ["run/ray_executor.py"]


def test_cli_run_with_ray_equals_the_local_run(cluster, demo, tmp_path):
    """`vamba-eval run --executor ray --gpus 2` through the real entry point: same results.json and samples
    (measurements aside) as `--executor local`, plus workers.json."""
    from vamba_eval.cli import main

    common = ["run", "--tasks", "lvbench,videomme", "--limit", str(LIMIT), "--no-report"]
    main(common + ["--executor", "local", "--output", str(tmp_path / "local")])
    main(common + ["--executor", "ray", "--gpus", "2", "--output", str(tmp_path / "ray")])
    body = {}
    for name in ("local", "ray"):
        data = json.loads((tmp_path / name / "results.json").read_text())
        data.pop("run_id")
        body[name] = data
    assert body["ray"] == body["local"]
    samples = {}
    for name in ("local", "ray"):
        lines = [json.loads(x) for x in (tmp_path / name / "samples.jsonl").read_text().splitlines()]
        samples[name] = {r["sample_id"]: {k: v for k, v in r.items() if k not in ("timings", "peak_memory_bytes")}
                         for r in lines}
    assert samples["ray"] == samples["local"]
    assert json.loads((tmp_path / "ray" / "workers.json").read_text())["sessions"]
