"""Leaderboards: shipped specs validate, paper rows are marked reported, submissions are checked."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import typer
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_runs import demo_run  # noqa: E402

from vamba_eval import leaderboard as lb  # noqa: E402
from vamba_eval.cli_extra import register  # noqa: E402
from vamba_eval.leaderboard_spec import (  # noqa: E402
    REPORTED, LeaderboardError, board_names, check_board, load_board, load_entries, load_references)
from vamba_eval.records import SampleRecord, dump_json_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "leaderboards"
PAPER_CSV = ROOT.parent / "shared" / "reference" / "paper_results.csv"
DEMO_LVBENCH = 50  # questions in the synthetic LVBench demo release (10 videos × 5)

TEST_BOARD = {
    "name": "demo-board", "title": "Demo board (synthetic)", "allow_synthetic": True,
    "groups": [{"name": "hour-long", "columns": [
        {"key": "lvbench", "task": "lvbench", "display": "LVBench", "split": "demo release",
         "n_samples": DEMO_LVBENCH, "main": True},
        {"key": "paper-only", "task": None, "display": "HourVideo", "split": "as reported"}]}],
    "references": ["references/refs.yaml"],
}
REFS = {"source": "unit test", "entries": [
    {"model": "Paper model", "size": "7B", "status": REPORTED, "scores": {"lvbench": 30.0, "paper-only": 40.0}}]}


@pytest.fixture(scope="module")
def valid_run(tmp_path_factory):
    return demo_run(tmp_path_factory, "full-lvbench", tasks="lvbench", report=True)


def boards(tmp_path: Path) -> Path:
    root = tmp_path / "boards"
    root.mkdir()
    (root / "demo-board.yaml").write_text(yaml.safe_dump(TEST_BOARD))
    (root / "real-board.yaml").write_text(yaml.safe_dump({**TEST_BOARD, "name": "real-board", "allow_synthetic": False}))
    (root / "references").mkdir()
    (root / "references" / "refs.yaml").write_text(yaml.safe_dump(REFS))
    return root


def copy_run(run: Path, tmp_path: Path, name: str = "copy") -> Path:
    out = tmp_path / name
    shutil.copytree(run, out)
    return out


def edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def problems_of(run: Path, board: str, root: Path) -> list[str]:
    with pytest.raises(lb.SubmissionRejected) as exc:
        lb.add(run, board, root=root)
    assert str(exc.value).count("\n  - ") == len(exc.value.problems)  # every problem is in the message
    return exc.value.problems


def has(problems: list[str], *needles: str) -> bool:
    return any(all(n in p for n in needles) for p in problems)


# --------------------------------------------------------------------------- specs


def test_shipped_boards_validate():
    names = board_names(SHIPPED)
    assert "long-video" in names
    for name in names:
        problems, _ = check_board(name, SHIPPED)
        assert problems == [], (name, problems)
    spec = load_board("long-video", SHIPPED)
    assert [g.name for g in spec.groups] == ["hour-long", "medium/short"]
    assert spec.sort_column.key == "lvbench" and not spec.allow_synthetic and spec.scoring == "official"
    by_key = {c.key: c for c in spec.columns}
    assert by_key["lvbench"].n_samples == 1549 and by_key["videomme"].n_samples == 2700
    assert by_key["videomme"].require_config == {"subtitles": False}
    assert by_key["hourvideo"].task is None and all(c.higher_is_better for c in spec.columns)


def test_paper_rows_reported_not_rerun():
    spec = load_board("long-video", SHIPPED)
    (ref,) = load_references(spec, SHIPPED)
    assert all(e.status == REPORTED for e in ref.entries)
    scores = {(e.model, k): v for e in ref.entries for k, v in e.scores.items()}
    assert scores[("VAMBA", "lvbench")] == 42.1 and scores[("Qwen2-VL", "mvbench")] == 67.0
    assert ref.source_of("lvbench").endswith("Table 4") and ref.source_of("mlvu").endswith("Table 5")
    if PAPER_CSV.is_file():  # every Table 4/5 number of the shared reference file, no more
        cols = {"LVBench": "lvbench", "HourVideo": "hourvideo", "Video-MME": "videomme", "MLVU": "mlvu",
                "LongVideoBench": "longvideobench", "MVBench": "mvbench"}
        rows = [r for r in csv.DictReader(PAPER_CSV.open()) if r["table"] in ("hour_long", "medium_short")]
        assert {(r["model"], cols[r["benchmark"]]): float(r["score"]) for r in rows} == scores
    _, table = lb.rows("long-video", SHIPPED)
    vamba = next(r for r in table if r.name == "VAMBA")
    assert vamba.kind == "reported" and REPORTED in vamba.source
    assert "42.1†" in lb.show("long-video", SHIPPED)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["groups"][0]["columns"][0].pop("split"), "split"),
    (lambda d: d["groups"][0]["columns"][0].update(value="question_type"), "value"),
    (lambda d: d["groups"][0]["columns"][1].update(key="lvbench"), "duplicate column key"),
    (lambda d: d["groups"][0]["columns"][0].pop("n_samples"), "needs n_samples"),
    (lambda d: d.update(sort_by="nope"), "sort_by"),
    (lambda d: d.update(colour="red"), "colour"),
])
def test_broken_spec_fails_with_a_message(tmp_path: Path, edit, message):
    root = boards(tmp_path)
    data = yaml.safe_load((root / "demo-board.yaml").read_text())
    edit(data)
    (root / "demo-board.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(LeaderboardError) as exc:
        load_board("demo-board", root)
    assert "demo-board.yaml" in str(exc.value) and message in str(exc.value)
    problems, _ = check_board("demo-board", root)
    assert problems and message in problems[0]


def test_reference_file_checks(tmp_path: Path):
    root = boards(tmp_path)
    path = root / "references" / "refs.yaml"
    refs = yaml.safe_load(path.read_text())
    refs["entries"][0]["scores"]["mlvu"] = 1.0
    path.write_text(yaml.safe_dump(refs))
    problems, _ = check_board("demo-board", root)
    assert has(problems, "unknown column 'mlvu'")
    refs["entries"][0]["status"] = "measured"
    path.write_text(yaml.safe_dump(refs))
    with pytest.raises(LeaderboardError, match="status"):
        load_references(load_board("demo-board", root), root)


# --------------------------------------------------------------------------- submissions


def test_valid_run_is_accepted_and_shown(valid_run: Path, tmp_path: Path):
    root = boards(tmp_path)
    entry = lb.add(valid_run, "demo-board", name="tiny <b>vamba</b>", root=root)
    assert entry.scores["lvbench"].n == DEMO_LVBENCH and entry.synthetic
    assert entry.frames["lvbench"].startswith("n8|") and entry.datasets["lvbench"]["revision"].startswith("sha256:")
    assert entry.scorer["vamba-eval"] and [e.entry_id for e in load_entries("demo-board", root)] == [entry.entry_id]
    text = lb.show("demo-board", root)
    assert "tiny <b>vamba</b>" in text and "measured" in text and "30.0†" in text
    page = lb.render("demo-board", tmp_path / "site" / "board.html", root=root)
    html = page.read_text(encoding="utf-8")
    assert "tiny &lt;b&gt;vamba&lt;/b&gt;" in html and "<b>vamba" not in html
    assert REPORTED in html and "TEST BOARD" in html and "http://" not in html and "https://" not in html
    links = LinkCollector.of(html)
    assert any(h.endswith("full-lvbench/report.html") for h in links)
    target = (page.parent / next(h for h in links if h.endswith("report.html"))).resolve()
    assert target == (valid_run / "report.html").resolve()
    assert html.count("<script") == 1 and "aria-sort" in html  # the sorting script, inline


def test_synthetic_run_rejected_from_real_board(valid_run: Path, tmp_path: Path):
    problems = problems_of(valid_run, "real-board", boards(tmp_path))
    assert len(problems) == 1 and has(problems, "synthetic demo data", "real release")


def test_every_problem_is_listed(valid_run: Path, tmp_path: Path):
    run = copy_run(valid_run, tmp_path)

    def config(d):
        d["config"]["limit"] = 19
        d["config"]["scoring"] = "lmms-eval"
        d["environment"]["datasets"]["lvbench"]["limit"] = 19

    edit_json(run / "config.json", config)
    edit_json(run / "results.json", lambda d: d["tasks"]["lvbench"]["overall"].update(value=99.0))
    lines = (run / "samples.jsonl").read_text().splitlines()
    recs = [SampleRecord.model_validate_json(line) for line in lines]
    dropped = recs[-1].sample_id
    changed = recs[0].model_copy(update={"response": "A", "correct": not recs[0].correct})
    (run / "samples.jsonl").write_text("\n".join(lines[:-1] + [dump_json_line(changed)]) + "\n")
    problems = problems_of(run, "real-board", boards(tmp_path))
    assert has(problems, "--limit 19")
    assert has(problems, "scoring mode is 'lmms-eval'")
    assert has(problems, "synthetic demo data")
    assert has(problems, "duplicate sample id", recs[0].sample_id)
    assert has(problems, "missing from samples.jsonl", dropped)
    assert has(problems, "results.json does not match", "overall.value", "99.0")
    assert len(problems) >= 6


def test_tampered_verdicts_and_missing_records_rejected(valid_run: Path, tmp_path: Path):
    run = copy_run(valid_run, tmp_path)
    recs = [SampleRecord.model_validate_json(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    flipped = recs[1].model_copy(update={"correct": not recs[1].correct})
    text = [dump_json_line(r) for r in [recs[0], flipped] + recs[2:]]
    (run / "samples.jsonl").write_text("\n".join(text) + "\n")
    problems = problems_of(run, "demo-board", boards(tmp_path))
    assert has(problems, "stored verdict(s) differ from the official scorer", recs[1].sample_id)
    assert has(problems, "results.json does not match")


def test_incomplete_or_unversioned_runs_rejected(valid_run: Path, tmp_path: Path):
    run = copy_run(valid_run, tmp_path)

    def config(d):
        d["environment"]["datasets"]["lvbench"]["n_samples"] = 12
        d["environment"]["datasets"]["lvbench"]["revision"] = None
        d["environment"]["packages"].pop("vamba-eval")
        d["frames"] = {}

    edit_json(run / "config.json", config)
    recs = [SampleRecord.model_validate_json(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    recs[2] = recs[2].model_copy(update={"frame_size": None})
    (run / "samples.jsonl").write_text("\n".join(dump_json_line(r) for r in recs) + "\n")
    problems = problems_of(run, "demo-board", boards(tmp_path))
    assert has(problems, "has 12 samples", f"has {DEMO_LVBENCH}")
    assert has(problems, "dataset revision not recorded")
    assert has(problems, "scorer version not recorded")
    assert has(problems, "frame spec not recorded")
    assert has(problems, "without recorded frame size", recs[2].sample_id)


def test_cli_leaderboard(valid_run: Path, tmp_path: Path, capsys):
    root = boards(tmp_path)
    app = typer.Typer(add_completion=False)
    app.command("noop")(lambda: None)
    register(app)

    def run(*argv: str) -> int:
        try:
            app(args=list(argv), standalone_mode=False)
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0

    assert run("leaderboard", "add", str(valid_run), "--board", "real-board", "--leaderboards-dir", str(root)) == 1
    assert "synthetic demo data" in capsys.readouterr().err
    assert run("leaderboard", "add", str(valid_run), "--board", "demo-board", "--leaderboards-dir", str(root)) == 0
    assert run("leaderboard", "show", "--board", "demo-board", "--leaderboards-dir", str(root)) == 0
    assert "LVBench" in capsys.readouterr().out
    assert run("leaderboard", "render", "--board", "demo-board", "-o", str(tmp_path / "b.html"),
               "--leaderboards-dir", str(root)) == 0
    assert run("leaderboard", "validate", "--leaderboards-dir", str(root)) == 0
    assert run("leaderboard", "show", "--board", "nope", "--leaderboards-dir", str(root)) == 2


class LinkCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.links += [v for k, v in attrs if k == "href" and v]

    @classmethod
    def of(cls, html: str) -> list[str]:
        c = cls()
        c.feed(html)
        return c.links
