"""``vamba-eval ablate``: a two-cell ablation (ablations/tiny-cpu.yaml, the `test` training preset) runs
on CPU, renders ablation.html with the numbers recomputed here by hand, resumes without redoing
finished work, restarts an interrupted cell cleanly; spec errors name the key; the shipped specs
are valid; the stage-1 distillation loss equals a hand computation on real tiny checkpoints."""

from __future__ import annotations

import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

import vamba_eval.run.executor  # noqa: F401  (bind its default stream now, not inside a CliRunner that closes it)
from vamba_eval.ablate.spec import SpecError, load_spec
from vamba_eval.cli_ablate import register

ROOT = Path(__file__).resolve().parent.parent
ABLATIONS = ROOT / "ablations"
TINY = ABLATIONS / "tiny-cpu.yaml"
SHARED_CSV = ROOT.parent / "shared" / "reference" / "paper_results.csv"


def cli(*args: str):
    app = typer.Typer()

    @app.callback()
    def main() -> None:  # a group, so the command is named as in `vamba-eval ablate`
        """test app"""

    register(app)
    return CliRunner().invoke(app, ["ablate", *map(str, args)])


def events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def samples(out: Path, cell: str, seed: int) -> dict[str, dict]:
    path = out / "cells" / cell / f"seed{seed}" / "run" / "samples.jsonl"
    return {r["sample_id"]: r for r in map(json.loads, path.read_text().splitlines())}


class Cells(HTMLParser):
    """Text of every ``<td data-col>`` by (table data-task, row data-cell, column)."""

    def __init__(self) -> None:
        super().__init__()
        self.task = self.cell = self.col = None
        self.cells: dict[tuple[str, str, str], str] = {}
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.task = a.get("data-task") or a.get("data-table")
        elif tag == "tr":
            self.cell = a.get("data-cell") or a.get("data-row")
        elif tag == "td" and "data-col" in a:
            self.col = a["data-col"]
            self.cells[(self.task, self.cell, self.col)] = ""

    def handle_endtag(self, tag):
        if tag == "td":
            self.col = None

    def handle_data(self, data):
        self.text.append(data)
        if self.col is not None:
            key = (self.task, self.cell, self.col)
            self.cells[key] = (self.cells[key] + data).strip()


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablate") / "out"
    result = cli(TINY, "--out", out, "--device", "cpu", "--threads", "1", "--jobs", "2")  # one process per seed
    assert result.exit_code == 0, result.output
    return out


# --- a two-cell ablation runs and renders -----------------------------------------------------------
def test_two_cell_ablation_renders_matrix(ablation):
    page = (ablation / "ablation.html").read_text(encoding="utf-8")
    parser = Cells()
    parser.feed(page)
    text = " ".join(parser.text)
    assert "not a reproduction" in text.lower() and "synthetic data" in text and "small models" in text
    assert "7B results reported in the paper, not re-run" in text
    assert "http://" not in page and "https://" not in page  # offline: nothing to fetch
    c = parser.cells
    n_q = len(samples(ablation, "D", 0))
    for cell in ("D", "B"):
        runs = [samples(ablation, cell, s) for s in (0, 1)]
        right = sum(bool(r["correct"]) for run in runs for r in run.values() if r["correct"] is not None)
        scored = sum(r["correct"] is not None for run in runs for r in run.values())
        assert float(c[("lvbench", cell, "pooled")]) == pytest.approx(100 * right / scored, abs=0.05)
        assert int(c[("lvbench", cell, "n")]) == scored == 2 * n_q
        low, high = map(float, c[("lvbench", cell, "ci")].split(" – "))
        assert 0 <= low <= 100 * right / scored <= high <= 100
        per_seed = [100 * sum(bool(r["correct"]) for r in run.values()) / len(run) for run in runs]
        mean = sum(per_seed) / 2
        sd = math.sqrt(sum((v - mean) ** 2 for v in per_seed))  # ddof=1 with two seeds
        assert c[("lvbench", cell, "mean_sd")] == f"{mean:.1f} ± {sd:.1f}"
    assert c[("lvbench", "D", "delta")] == "ref"
    # Δ of B against the reference D: paired on the same questions of the same seed, pooled over seeds
    b = cc = 0
    for seed in (0, 1):
        d, bb = samples(ablation, "D", seed), samples(ablation, "B", seed)
        b += sum(d[k]["correct"] and not bb[k]["correct"] for k in d)
        cc += sum(bb[k]["correct"] and not d[k]["correct"] for k in d)
    assert c[("lvbench", "B", "bc")] == f"{b} / {cc}"
    assert float(c[("lvbench", "B", "delta")]) == pytest.approx(100 * (cc - b) / (2 * n_q), abs=0.05)
    from scipy.stats import binomtest

    p = 1.0 if b + cc == 0 else binomtest(b, b + cc, 0.5).pvalue
    assert c[("lvbench", "B", "p")] == ("<0.001" if p < 0.001 else f"{p:.3f}")
    assert re.fullmatch(r"[+-]\d+\.\d – [+-]\d+\.\d", c[("lvbench", "B", "delta_ci")])
    # the paper's 7B numbers beside the mapped cells (Table 2, LVBench), and in the paper tables
    assert c[("lvbench", "D", "paper")].startswith("35.3†")
    assert c[("lvbench", "B", "paper")].startswith("34.2†")
    assert c[("ablation_t2", "D: CA init from SA / Mamba-2", "paper-LVBench")] == "35.3†"
    assert c[("ablation_t2", "D: CA init from SA / Mamba-2", "ours-LVBench")] == c[("lvbench", "D", "pooled")]
    assert c[("ablation_t3", "lambda=0", "paper-G-VEval")] == "82.19†"
    data = json.loads((ablation / "ablation.json").read_text())
    assert set(data["tasks"]["lvbench"]["cells"]) == {"D", "B"} and not data["incomplete"]


def test_teacher_trained_once_per_seed_and_shared(ablation):
    teachers = sorted(p.name for p in (ablation / "teachers").iterdir())
    assert len(teachers) == 2 and [t.split("-")[0] for t in teachers] == ["seed0", "seed1"]
    for cell in ("D", "B"):
        link = ablation / "cells" / cell / "seed0" / "train" / "teacher"
        assert link.resolve() == (ablation / "teachers" / teachers[0] / "teacher").resolve()
    started = [e["unit"] for e in events(ablation) if e.get("event") == "start" and e["unit"].startswith("teacher")]
    assert sorted(started) == ["teacher seed0", "teacher seed1"]
    assert "each seed trains its own teacher" in (ablation / "ablation.html").read_text()


# --- resume ---------------------------------------------------------------------------------------
def _mtimes(out: Path) -> dict[str, float]:
    keep = ("model.safetensors", "samples.jsonl", "results.json", "state.json")
    return {str(p): p.stat().st_mtime_ns for p in (out / "cells").rglob("*") if p.name in keep}


def test_second_run_skips_finished_cells(ablation):
    before, n_events = _mtimes(ablation), len(events(ablation))
    result = cli(TINY, "--out", ablation, "--device", "cpu")
    assert result.exit_code == 0, result.output
    new = events(ablation)[n_events:]
    assert not [e for e in new if e.get("event") in ("start", "done")], "a finished cell was trained or evaluated again"
    assert {e["unit"] for e in new if e.get("event") == "skip"} == {f"cell {c} seed{s}" for c in "DB" for s in (0, 1)}
    assert _mtimes(ablation) == before


def test_scored_cells_need_no_checkpoints(ablation, tmp_path):
    """An ablation moved to another machine with only its teachers and run directories (the trained
    cell checkpoints left behind) is complete: nothing is trained again."""
    out = tmp_path / "moved"
    shutil.copytree(ablation, out, symlinks=True, ignore=shutil.ignore_patterns("converted", "stage1", "stage2"))
    assert not list((out / "cells").rglob("model.safetensors"))
    n_events = len(events(out))
    result = cli(TINY, "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert not [e for e in events(out)[n_events:] if e.get("event") in ("start", "done")]
    assert (out / "ablation.html").is_file()


def test_interrupted_cell_restarts_cleanly(ablation, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(ablation, out, symlinks=True)
    unit = out / "cells" / "B" / "seed1"
    state = json.loads((unit / "state.json").read_text())
    del state["steps"]["stage2"], state["steps"]["eval"]  # killed during stage 2: not recorded as finished
    (unit / "state.json").write_text(json.dumps(state))
    (unit / "train" / "stage2" / "model.safetensors").write_bytes(b"torn")
    n_events = len(events(out))
    result = cli(TINY, "--out", out, "--device", "cpu", "--only", "B")
    assert result.exit_code == 0, result.output
    started = [(e["unit"], e.get("step")) for e in events(out)[n_events:] if e.get("event") == "start"]
    assert started == [("cell B seed1", "stage2"), ("cell B seed1", "eval")]
    assert json.loads((unit / "state.json").read_text())["steps"].keys() >= {"convert", "stage1", "stage2", "eval"}


def _rerun_unscored(out: Path, cell: str, seed: int, drop: tuple[str, ...]) -> list[tuple[str, str]]:
    """Forget ``cell``'s evaluation, delete its ``drop`` checkpoints, run again: the (unit, step)s started."""
    unit = out / "cells" / cell / f"seed{seed}"
    state = json.loads((unit / "state.json").read_text())
    del state["steps"]["eval"]  # trained, not scored
    (unit / "state.json").write_text(json.dumps(state))
    for stage in drop:
        shutil.rmtree(unit / "train" / stage)
    n_events = len(events(out))
    assert cli(TINY, "--out", out, "--device", "cpu", "--only", cell).exit_code == 0
    return [(e["unit"], e.get("step")) for e in events(out)[n_events:] if e.get("event") == "start"]


def test_a_cell_resumes_from_its_last_checkpoint_alone(ablation, tmp_path):
    """Carried without its earlier checkpoints (converted, stage1), a trained but unscored cell is evaluated,
    not trained again; without its last one too, it trains from the furthest checkpoint left."""
    out = tmp_path / "carried"
    shutil.copytree(ablation, out, symlinks=True)
    assert _rerun_unscored(out, "B", 1, ("converted", "stage1")) == [("cell B seed1", "eval")]
    assert _rerun_unscored(out, "D", 0, ("converted", "stage2")) == [("cell D seed0", "stage2"), ("cell D seed0", "eval")]


def test_time_budget_stops_cleanly(tmp_path):
    result = cli(TINY, "--out", tmp_path / "o", "--max-minutes", "0")
    assert result.exit_code == 3, result.output
    assert [e for e in events(tmp_path / "o") if e.get("event") == "stop"]
    assert "Not finished" in (tmp_path / "o" / "ablation.html").read_text()


def test_render_only_and_unknown_cell(ablation, tmp_path):
    result = cli(TINY, "--out", ablation, "--render-only")
    assert result.exit_code == 0 and "ablation.html" in result.output
    result = cli(TINY, "--out", tmp_path, "--only", "E")
    assert result.exit_code == 2 and "Unknown cell 'E'" in result.output


def test_checkpoint_cell_and_external_teacher(ablation, tmp_path):
    """A cell from an existing checkpoint (evaluated once) as the reference, and a recipe cell whose seed
    reuses a given teacher folder instead of training one."""
    import yaml

    teacher = next((ablation / "teachers").glob("seed0-*")) / "teacher"
    spec = {"name": "ext", "preset": "test", "data": str(ablation / "data"), "seeds": [0], "tasks": ["lvbench"],
            "eval": {"max_new_tokens": 4}, "reference": "given", "teachers": {0: str(teacher)},
            "cells": [{"name": "given", "checkpoint": str(ablation / "cells" / "D" / "seed1" / "train" / "stage2")},
                      {"name": "B", "recipe": {"variant": "B"}}]}
    path = tmp_path / "ext.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    result = cli(path, "--out", out, "--threads", "1")
    assert result.exit_code == 0, result.output
    started = [(e["unit"], e.get("step")) for e in events(out) if e.get("event") == "start"]
    assert ("cell given seed0", "eval") in started and not [u for u, _ in started if u.startswith("teacher")]
    assert (out / "cells" / "B" / "seed0" / "train" / "teacher").resolve() == teacher.resolve()
    parser = Cells()
    parser.feed((out / "ablation.html").read_text())
    assert parser.cells[("lvbench", "given", "delta")] == "ref"
    assert parser.cells[("lvbench", "B", "bc")] != "—"  # paired with the single run of the checkpoint cell
    page = (out / "ablation.html").read_text()
    assert f"teachers given: seed 0 <code>{teacher}</code>" in page and "trains its own teacher" not in page


# --- spec validation --------------------------------------------------------------------------------
BASE = {"name": "t", "tasks": ["lvbench"], "reference": "D", "seeds": [0],
        "cells": [{"name": "D", "recipe": {"variant": "D"}}, {"name": "B", "recipe": {"variant": "B"}}]}


def _spec(tmp_path, **changes):
    import yaml

    data = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        if key.startswith("cell_B_"):
            data["cells"][1][key[len("cell_B_"):]] = value
        else:
            data[key] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


@pytest.mark.parametrize("changes,needle", [
    ({"seeds": [0, 0]}, "seeds: seeds must be distinct"),
    ({"reference": "Z"}, "reference: 'Z' is not a cell"),
    ({"tasks": ["lvbnch"]}, "tasks: Unknown task 'lvbnch'. Did you mean: lvbench"),
    ({"eval": {"device": "cuda"}}, "eval: device: set by the ablation runner"),
    ({"eval": {"framez": 8}}, "eval: unknown run-config key(s) framez"),
    ({"cell_B_recipe": {"varient": "B"}}, "cells[B].recipe.varient: no recipe field 'varient'"),
    ({"cell_B_recipe": {"variant": "E"}}, "cells[B].recipe.variant: 'E' is not one of A, B, C, D"),
    ({"cell_B_recipe": {"variant": "B", "seed": 3}}, "cells[B]: Value error, cell 'B': recipe.seed"),
    ({"cell_B_checkpoint": "/x"}, "cells[B]: Value error, cell 'B': give exactly one of recipe"),
    ({"cell_B_paper": [{"table": "ablation_t2", "row": "B"}], "paper_results": str(ABLATIONS / "paper_results.csv")},
     "cells[B].paper: no row 'B' in table 'ablation_t2'"),
    ({"set": {"stage1.stepz": 3}}, "set.stage1.stepz: no recipe field 'stage1.stepz'"),
    ({"set": {"stage1.steps": "many"}}, "set.stage1.steps: 'many' is not a JSON value"),
    ({"colour": 1}, "colour: Extra inputs are not permitted"),
])
def test_spec_errors_name_the_key(tmp_path, changes, needle):
    with pytest.raises(SpecError) as err:
        load_spec(_spec(tmp_path, **changes))
    assert needle.replace("Value error, ", "") in str(err.value)


def test_bad_spec_is_a_usage_error(tmp_path):
    result = cli(_spec(tmp_path, reference="Z"), "--out", tmp_path / "o")
    assert result.exit_code == 2 and "reference" in result.output


def test_shipped_specs():
    from vamba_eval.ablate.runner import plan

    spec, base = load_spec(ABLATIONS / "paper.yaml")
    assert spec.seeds == [0, 1, 2] and set(spec.tasks) == {"lvbench", "videomme", "mvbench"}
    recipe_cells = [c for c in spec.cells if c.kind == "recipe"]
    variants = {c.recipe.get("variant", "D") for c in recipe_cells}
    lambdas = {float(c.recipe.get("distill_lambda", 0)) for c in recipe_cells}
    assert variants == {"A", "B", "C", "D"} and lambdas == {0, 0.001, 0.01, 0.5, 1, 2}
    assert len([u for u in plan(spec) if u[0].kind == "recipe"]) == 27
    # every seed starts from the bundled tiny Qwen2-VL, as the paper's rows start from one Qwen2-VL-7B
    assert set(spec.teachers) == set(spec.seeds)
    assert all((base / t).resolve() == (base.parent / "vamba_eval" / "checkpoints" / "qwen2vl-tiny").resolve()
               for t in spec.teachers.values())
    mapped = {(p.table, p.row) for c in spec.cells for p in c.paper}
    from vamba_eval.ablate.spec import read_paper_csv

    rows = read_paper_csv(base / spec.paper_results)
    assert mapped == {(r["table"], r["model"]) for r in rows}  # every row of Tables 2 and 3 has its cell
    tiny, _ = load_spec(TINY)
    assert [c.name for c in tiny.cells] == ["D", "B"] and tiny.preset == "test"


def test_committed_paper_result_is_complete_and_within_20_minutes():
    """The committed GPU run of paper.yaml covers every cell × seed of the shipped spec, took ≤ 20 min of
    `ablate` wall time, and its README quotes that time and labels what the matrix is."""
    from vamba_eval.ablate.runner import plan

    spec, _ = load_spec(ABLATIONS / "paper.yaml")
    results = sorted((ABLATIONS / "results").glob("paper-h100-*"))
    assert results, "no committed GPU result of ablations/paper.yaml"
    folder = results[-1]
    data = json.loads((folder / "ablation.json").read_text())
    assert data["incomplete"] == [] and set(data["tasks"]) == set(spec.tasks)
    for task in spec.tasks:
        cells = data["tasks"][task]["cells"]
        for cell, seed in {(u[0].name, u[1]) for u in plan(spec)}:
            assert str(seed) in cells[cell]["seeds"], (task, cell, seed)
    timing = data["timing"]
    assert timing["wall_s"] == sum(p["seconds"] for p in timing["parts"]) <= 20 * 60
    readme = (folder / "README.md").read_text()
    assert f"{timing['wall_s']} s" in readme and "not** a reproduction" in readme


def test_paper_csv_copy_matches_shared():
    if not SHARED_CSV.is_file():
        pytest.skip("shared/reference/paper_results.csv not beside this checkout")
    import csv

    shared = [r for r in csv.DictReader(SHARED_CSV.open()) if r["table"].startswith("ablation_t")]
    ours = list(csv.DictReader(line for line in (ABLATIONS / "paper_results.csv").open() if not line.startswith("#")))
    assert ours == shared


# --- the distillation loss on real (tiny) checkpoints -------------------------------------------------
def test_stage1_loss_is_lm_plus_lambda_topk_kl_by_hand(ablation):
    """student_step(λ) = LM + λ · KL(teacher ‖ student) over the teacher's top-k ids at every label position,
    student position q ↔ teacher position q + N — recomputed here with explicit loops."""
    from vamba_eval.train import ckpt
    from vamba_eval.train.batches import IGNORE, TrainSet, token_ids
    from vamba_eval.train.forward import lm_loss, student_logits, teacher_forward
    from vamba_eval.train.stages import student_step

    train = ablation / "cells" / "D" / "seed0" / "train"
    student = ckpt.load_vamba(train / "converted").eval()
    teacher = ckpt.load_qwen2vl(train / "teacher").eval()
    from vamba_eval.models.tokenizer import load_tokenizer

    tok = load_tokenizer(train / "teacher")
    data = TrainSet(ablation / "data", tok, holdout_every=0)
    batch = data.collate([i for i, e in enumerate(data.examples) if e["kind"] == "qa"][:3])
    lam, k = 0.5, 7
    with torch.no_grad():
        loss, parts = student_step(student, teacher, lam, k, token_ids(tok).video_pad)(batch)
        s_logits = student_logits(student, batch).float()
        t_logits, _, n = teacher_forward(teacher, batch, token_ids(tok).video_pad)
    kls = []
    for row in range(batch.ids.shape[0]):
        for q in range(batch.ids.shape[1] - 1):
            if batch.labels[row, q + 1] == IGNORE:
                continue
            t = t_logits[row, q + n].double()
            ids = sorted(range(t.numel()), key=lambda i: -float(t[i]))[:k]
            p = torch.softmax(t[ids], 0)
            s = torch.softmax(s_logits[row, q, ids].double(), 0)
            kls.append(float((p * (p.log() - s.log())).sum()))
    hand_kl = sum(kls) / len(kls)
    lm = float(lm_loss(s_logits, batch.labels))
    assert parts["kl"] == pytest.approx(hand_kl, rel=1e-4, abs=1e-6)
    assert float(loss) == pytest.approx(lm + lam * hand_kl, rel=1e-5)


def test_module_entry_point_reports_an_unknown_option_without_a_traceback():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "vamba_eval.ablate", "--bogus"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "No such option: --bogus" in proc.stderr and "Traceback" not in proc.stderr
