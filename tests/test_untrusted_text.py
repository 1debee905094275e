"""Untrusted text and secrets (issue 10, item 4).

Hostile strings — script tags, attribute breakouts, ``</script>`` inside data, ``javascript:``
URLs, meta refresh, base/link/iframe tags, template syntax — enter through every door a run has:
annotation fields (question, options, ids, breakdown labels), subtitles, file and folder names,
model outputs, error messages, config values, leaderboard specs/references/entries and ablation
specs. Every HTML page vamba-eval renders (run report + its samples pages, regress, leaderboard,
ablation, parity, bench) is then audited with a real HTML parser: at most one script element (ours,
pinned by its hash in the page's CSP), no ``on*`` attribute, no forbidden element, no ``javascript:``/remote URL, and the
hostile text still shown to the reader, as text.

Secrets: canary values (deliberately NOT shaped like API keys, so no pattern scrubber can hide a
leak) in OPENAI_API_KEY, HF_TOKEN, the judge's key variable and other secret-named variables;
a normal run and a judge run whose server echoes the key back (in a reply and in an HTTP 401
error) must leave the canary in no file of the run directory or judge cache, nor in stdout/stderr.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_runs import cache_env, demo_cache  # noqa: E402
from html_audit import audit  # noqa: E402

from vamba_eval.run import store  # noqa: E402

PAYLOADS = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(2)>',
    "'><svg/onload=alert(3)>",
    "</script><script>alert(4)</script>",
    "</pre></code></textarea></title></style><script>alert(5)</script>",
    '<a href="javascript:alert(6)">click</a>',
    "javascript:alert(7)",
    "<iframe srcdoc='<script>alert(8)</script>'></iframe>",
    '<meta http-equiv="refresh" content="0;url=javascript:alert(9)">',
    "<base href='https://evil.example/'><link rel=stylesheet href=https://evil.example/x.css>",
    "<!-- -- --><![CDATA[x]]>{{ 7*7 }}{% raw %}${7*7}",
    "& &amp; &lt; &#x3C;script&#x3E;",
)
HOSTILE = " ".join(PAYLOADS)  # one line, no control characters: fits any annotation text field
MODEL_OUTPUTS = (HOSTILE, "The answer is (B). " + PAYLOADS[0], PAYLOADS[3] + "\u2028\u2029" + PAYLOADS[1],
                 "B" + PAYLOADS[5], PAYLOADS[6])
FILE_PAYLOAD = '"><img src=x onerror=alert(10)>'  # a legal file / folder name (no "/")


# -- a run on hostile releases with a hostile model --------------------------------------------
def rows_of(run: Path) -> list[dict[str, Any]]:
    """samples.jsonl split on "\n" only (a record may hold a raw U+2028, which splitlines() splits on)."""
    text = (run / store.SAMPLES).read_text(encoding="utf-8")
    return [json.loads(x) for x in text.split("\n") if x.strip()]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with cache_env(demo_cache(tmp_path_factory)) as path:
        yield path


def _hostile_lvbench(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)
    meta = dst / "video_info.meta.jsonl"
    videos = [json.loads(line) for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]
    first = videos[0]
    (dst / "videos" / f"{first['key']}.mp4").rename(dst / "videos" / f"{FILE_PAYLOAD}.mp4")
    first["key"], first["type"] = FILE_PAYLOAD, PAYLOADS[0]  # a file name and a breakdown label
    for qa in first["qa"]:
        head, *options = qa["question"].split("\n")
        options = [f"{o[:4]}{PAYLOADS[k % len(PAYLOADS)]} {o[4:]}" for k, o in enumerate(options)]
        qa["question"] = "\n".join([f"{HOSTILE} {head}", *options])
        qa["uid"] = f"{FILE_PAYLOAD}{qa['uid']}"
    first["qa"][1]["answer"] = PAYLOADS[1]  # a bad record: a recorded error naming it
    meta.write_text("".join(json.dumps(v, ensure_ascii=False) + "\n" for v in videos), encoding="utf-8")


def _hostile_videomme(src: Path, dst: Path) -> None:
    import pandas as pd

    shutil.copytree(src, dst)
    path = dst / "videomme" / "test-00000-of-00001.parquet"
    frame = pd.read_parquet(path)
    for i in range(len(frame)):
        frame.at[i, "question"] = f"{HOSTILE} {frame.at[i, 'question']}"
        frame.at[i, "options"] = [f"{o[:3]}{PAYLOADS[(i + k) % len(PAYLOADS)]}" for k, o in enumerate(frame.at[i, "options"])]
        frame.at[i, "question_id"] = f"{PAYLOADS[2]}{frame.at[i, 'question_id']}"
    frame["domain"] = PAYLOADS[4]
    frame["sub_category"] = PAYLOADS[7]
    frame["task_type"] = PAYLOADS[8]
    frame.to_parquet(path, index=False)
    for srt in (dst / "subtitle").glob("*.srt"):
        text = srt.read_text(encoding="utf-8")
        srt.write_text(re.sub(r"(-->[^\n]*\n)([^\n]+)", lambda m: m.group(1) + HOSTILE, text, count=3), encoding="utf-8")


@pytest.fixture(scope="module")
def hostile_run(cache, tmp_path_factory) -> Path:
    """A real run (tiny model) on hostile releases, then hostile model outputs re-scored from disk."""
    from vamba_eval import evaluate
    from vamba_eval.registry import get_task
    from vamba_eval.run.api import rescore
    from vamba_eval.run.plan import demo_folder

    root = tmp_path_factory.mktemp("hostile") / FILE_PAYLOAD
    _hostile_lvbench(demo_folder(get_task("lvbench"), 0), root / "lvbench")
    _hostile_videomme(demo_folder(get_task("videomme"), 0), root / "videomme")
    out = root / f"run{FILE_PAYLOAD}"
    evaluate(tasks="lvbench,videomme", data_dir={"lvbench": str(root / "lvbench"), "videomme": str(root / "videomme")},
             limit=4, frames=4, subtitles=True, output=str(out), progress=False, report=False)
    rows = rows_of(out)
    for i, row in enumerate(rows):
        if row["response"] is not None:
            row["response"] = MODEL_OUTPUTS[i % len(MODEL_OUTPUTS)]
    (out / store.SAMPLES).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    rescore(out)
    return out


def test_the_hostile_run_carries_the_payloads(hostile_run):
    """Sanity: the payloads really are in the run's files (so the page audits below mean something)."""
    rows = rows_of(hostile_run)
    assert any(FILE_PAYLOAD in r["video"] and FILE_PAYLOAD in r["sample_id"] for r in rows)
    assert any(r["error"] and FILE_PAYLOAD in r["error"]["message"] for r in rows)
    assert any(r["response"] == HOSTILE for r in rows)
    assert any(HOSTILE in (r["prompt"] or "") and "[after frame" not in (r["prompt"] or "") for r in rows)
    assert any(HOSTILE in (r["prompt"] or "") for r in rows if r["task"] == "videomme")  # subtitles
    results = json.loads((hostile_run / store.RESULTS).read_text(encoding="utf-8"))
    assert PAYLOADS[0] in results["tasks"]["lvbench"]["breakdowns"]["type"]
    assert PAYLOADS[8] in results["tasks"]["videomme"]["breakdowns"]["task_type"]


def test_run_report_and_its_sample_pages_escape_everything(hostile_run, tmp_path):
    from vamba_eval.report import render_run_report

    run = tmp_path / "run"
    shutil.copytree(hostile_run, run)
    page = render_run_report(run, max_samples_inline=2)  # + samples-N.html pages
    pages = sorted(run.glob("samples-*.html"))
    assert pages
    text = audit(page, must_show=(HOSTILE, FILE_PAYLOAD, PAYLOADS[0], PAYLOADS[8]))
    assert "{{ 7*7 }}" in text  # data is never evaluated as a template
    seen = "".join(audit(p) for p in pages)
    assert HOSTILE in seen and MODEL_OUTPUTS[1] in seen


def _poison(value: Any, key: str = "") -> Any:
    """Every string (and every label-like dict key) of a JSON document, made hostile."""
    keep = {"schema_version", "config_hash", "status", "metric", "scoring"}
    if isinstance(value, dict):
        return {(_poison(k) if key in ("categories", "breakdowns", "n_flagged", "packages", "datasets", "usage") else k):
                _poison(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_poison(v, key) for v in value]
    if isinstance(value, str) and key not in keep:
        return value + " " + PAYLOADS[len(value) % len(PAYLOADS)]
    return value


def test_every_string_of_a_run_directory_is_escaped(hostile_run, tmp_path):
    """config.json, results.json and samples.jsonl with EVERY string value (and every label) poisoned."""
    from vamba_eval.report import render_run_report

    run = tmp_path / "run"
    shutil.copytree(hostile_run, run)
    for name in (store.CONFIG, store.RESULTS):
        data = json.loads((run / name).read_text(encoding="utf-8"))
        (run / name).write_text(json.dumps(_poison(data), ensure_ascii=False), encoding="utf-8")
    rows = [_poison(r) for r in rows_of(run)]
    (run / store.SAMPLES).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    text = audit(render_run_report(run), must_show=(HOSTILE,))
    assert PAYLOADS[3] in text and PAYLOADS[9] in text


def _regress_page(hostile_run: Path, tmp_path: Path) -> Path:
    from vamba_eval.regress import compare, render_html

    base = tmp_path / "base"
    cand = tmp_path / f"cand{FILE_PAYLOAD}"
    shutil.copytree(hostile_run, base)
    shutil.copytree(hostile_run, cand)
    for run, flip in ((base, True), (cand, False)):  # every answer flips between the two runs
        rows = rows_of(run)
        for r in rows:
            if r["error"] is None:
                r["correct"] = flip
                r["unparsed"] = False
                r["extracted"] = r["gold"] if flip else PAYLOADS[0]
                r["response"] = HOSTILE if flip else PAYLOADS[3]
        (run / store.SAMPLES).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return render_html(compare(base, cand), tmp_path / "regress.html")


def test_regress_page_escapes_everything(hostile_run, tmp_path):
    audit(_regress_page(hostile_run, tmp_path), must_show=(HOSTILE, PAYLOADS[3], FILE_PAYLOAD))


def test_leaderboard_page_escapes_everything(hostile_run, tmp_path):
    from vamba_eval import leaderboard as lb
    from vamba_eval.report import render_run_report

    run = tmp_path / "javascript:alert(11)"  # a run folder whose relative link would read as a URL scheme
    shutil.copytree(hostile_run, run)
    render_run_report(run)
    root = tmp_path / "boards"
    (root / "references").mkdir(parents=True)
    board = {"name": "xss-board", "title": HOSTILE, "description": HOSTILE, "allow_synthetic": True,
             "references": ["references/refs.yaml"],
             "groups": [{"name": PAYLOADS[1], "title": PAYLOADS[0], "columns": [
                 {"key": "lvbench", "task": "lvbench", "display": PAYLOADS[3], "split": PAYLOADS[5], "main": True, "n_samples": 20,
                  "description": HOSTILE},
                 {"key": "other", "task": None, "display": PAYLOADS[7], "split": PAYLOADS[8]}]}]}
    refs = {"source": HOSTILE, "tables": {PAYLOADS[0]: ["other"]}, "entries": [
        {"model": HOSTILE, "size": PAYLOADS[1], "status": "reported, not re-run",
         "scores": {"lvbench": 30.0, "other": 40.0}, "notes": {"other": HOSTILE}}]}
    (root / "xss-board.yaml").write_text(yaml.safe_dump(board), encoding="utf-8")
    (root / "references" / "refs.yaml").write_text(yaml.safe_dump(refs), encoding="utf-8")
    (root / "entries" / "xss-board").mkdir(parents=True)
    entry = {"entry_id": "e1", "board": "xss-board", "name": HOSTILE, "model": {"name": PAYLOADS[0]},
             "run_id": HOSTILE, "run_dir": str(run), "config_hash": PAYLOADS[1], "added": PAYLOADS[2],
             "scores": {"lvbench": {"value": 50.0, "ci95": [40.0, 60.0], "n": 4}},
             "frames": {"lvbench": HOSTILE}, "notes": [HOSTILE]}
    (root / "entries" / "xss-board" / "e1.json").write_text(json.dumps(entry), encoding="utf-8")
    page = lb.render("xss-board", tmp_path / "site" / f"board{FILE_PAYLOAD}.html", root=root)
    audit(page, must_show=(HOSTILE, PAYLOADS[3], PAYLOADS[7]))
    assert "javascript%3Aalert%2811%29/report.html" in page.read_text(encoding="utf-8")  # linked, never a scheme


def test_ablation_page_escapes_everything(tmp_path):
    pytest.importorskip("vamba_eval.ablate.page")
    from vamba_eval.ablate import page as ablation_page
    from vamba_eval.ablate.spec import load_spec

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({
        "name": "xss", "title": HOSTILE, "description": HOSTILE, "seeds": [0], "tasks": ["lvbench"],
        "reference": "A", "axes": {"variant": PAYLOADS[0]},
        "cells": [{"name": "A", "label": HOSTILE, "recipe": {"variant": "D"}},
                  {"name": "B", "label": PAYLOADS[3], "recipe": {"variant": "C"}}]}), encoding="utf-8")
    try:
        spec, base = load_spec(spec_file)
    except Exception as err:  # noqa: BLE001 - the spec format is another module's: say why, do not guess
        pytest.fail(f"could not build a minimal ablation spec ({err}); update this test's spec")
    out = tmp_path / "out"
    out.mkdir()
    page = ablation_page.render(spec, base, out)
    audit(page, must_show=(HOSTILE, PAYLOADS[3]))


def test_templates_never_bypass_escaping():
    """Static guard over reports/*.j2 and every Jinja environment: autoescape on, no ``|safe``,
    no autoescape-off blocks, and data never placed inside a <script> element (only our own code,
    the ``script`` macro); JSON for scripts would have to go through ``tojson``."""
    from vamba_eval.report import template_root

    root = Path(template_root())
    sources = {p.name: re.sub(r"\{#.*?#\}", "", p.read_text(encoding="utf-8"), flags=re.S)  # minus comments
               for p in root.iterdir() if p.name.endswith(".j2")}
    assert {"run_report.html.j2", "regress.html.j2", "leaderboard.html.j2"} <= set(sources)
    for name, src in sources.items():
        assert not re.search(r"\|\s*safe\b|autoescape\s+false|\bMarkup\b", src), name
        for body in re.findall(r"<script[^>]*>(.*?)</script>", src, re.S):
            assert body.strip() == "{{ script }}", f"{name}: data inside a <script> element: {body[:80]!r}"
    code = Path(__file__).resolve().parents[1] / "vamba_eval"
    for path in code.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"\bEnvironment\(", text):
            call = text[m.end():m.end() + 300].split("\n\n")[0]
            assert "autoescape=True" in call, f"{path}: a Jinja environment without autoescape=True"


def test_tojson_in_our_environment_cannot_break_out_of_a_script():
    """If a page ever embeds JSON in a <script>, ``tojson`` escapes <, >, & and ' (\\u003c …)."""
    import jinja2

    env = jinja2.Environment(autoescape=True)
    out = env.from_string("<script>var d = {{ d | tojson }};</script>").render(d={"x": HOSTILE + "\u2028"})
    body = out[len("<script>"):-len("</script>")]
    assert "</" not in body and "<" not in body and "&" not in body.replace("\\u0026", "")
    assert json.loads(body[len("var d = "):-1])["x"] == HOSTILE + "\u2028"


# -- secrets -----------------------------------------------------------------------------------
CANARY = "canary" + uuid.uuid4().hex  # not key-shaped: only "never written" keeps it out of files
SECRET_ENV = ("OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "VAMBA_TEST_JUDGE_KEY",
              "AWS_SECRET_ACCESS_KEY", "WANDB_API_KEY", "GITHUB_TOKEN", "MY_SERVICE_PASSWORD")


def _secrets(monkeypatch, tmp_path: Path) -> dict[str, str]:
    values = {name: f"{CANARY}{i}" for i, name in enumerate(SECRET_ENV)}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("VAMBA_EVAL_CACHE", str(tmp_path / "cache"))
    return values


def _assert_nowhere(folders: list[Path], streams: str) -> None:
    assert CANARY not in streams, "a secret was printed"
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                assert CANARY.encode() not in path.read_bytes(), f"a secret was written to {path}"


def _run_cli(args: list[str]) -> None:
    from vamba_eval.cli import main

    try:
        main(args)
    except SystemExit as exc:
        assert not exc.code, exc.code


def test_no_secret_lands_in_a_normal_run(cache, monkeypatch, tmp_path, capfd):
    _secrets(monkeypatch, tmp_path)
    monkeypatch.setenv("VAMBA_EVAL_CACHE", str(cache))  # the shared demo data; the canary check covers the run dir
    out = tmp_path / "run"
    _run_cli(["run", "--tasks", "lvbench", "--limit", "2", "--frames", "4", "--output", str(out)])
    _run_cli(["score", str(out)])
    _run_cli(["report", str(out)])
    streams = capfd.readouterr()
    assert (out / store.REPORT).is_file()
    _assert_nowhere([out], streams.out + streams.err)


def _completion(text: str, score_top: list[tuple[str, float]]) -> dict[str, Any]:
    """A chat.completion whose text is ``text`` + " $<score>$." with the score token's top-5 logprobs."""
    import math

    toks = [(w, []) for w in re.findall(r"\s*\S+", text)] + [(" $", []), (score_top[0][0], score_top), ("$", [])]
    content = [{"token": t, "logprob": -0.01, "bytes": list(t.encode()),
                "top_logprobs": [{"token": a, "logprob": math.log(p), "bytes": list(a.encode())} for a, p in top]}
               for t, top in toks]
    return {"id": "chatcmpl-x", "object": "chat.completion", "created": 0, "model": "judge-test",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": {"content": content},
                         "message": {"role": "assistant", "content": "".join(t for t, _ in toks)}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": len(toks), "total_tokens": 10 + len(toks)}}


def _judge_server(key: str) -> Any:
    from judge_server import Server

    server = Server()
    calls = {"n": 0}

    def respond(body: dict) -> tuple:
        calls["n"] += 1
        auth = server.requests[-1]["auth"] or ""
        if calls["n"] % 3 == 0:  # a proxy that refuses and echoes the credential
            return 401, {"error": {"message": f"Incorrect API key provided: {auth[7:]}", "type": "invalid_request_error"}}
        return 200, _completion(f"I was called with {auth} and {key}.", [("80", 0.5), ("90", 0.5)])

    server.responder = respond
    return server


def test_no_secret_lands_in_a_judge_run_even_when_the_judge_echoes_it(monkeypatch, tmp_path, capfd):
    values = _secrets(monkeypatch, tmp_path)
    key = values["VAMBA_TEST_JUDGE_KEY"]
    server = _judge_server(key)
    try:
        out = tmp_path / "run"
        _run_cli(["run", "--tasks", "gveval", "--limit", "3", "--frames", "4", "--output", str(out),
                  "--judge-model", "judge-test", "--judge-base-url", server.url,
                  "--judge-api-key-env", "VAMBA_TEST_JUDGE_KEY"])
        assert len(server.requests) >= 3 and all(r["auth"] == f"Bearer {key}" for r in server.requests)
        _run_cli(["score", str(out)])
        _run_cli(["report", str(out)])
    finally:
        server.httpd.shutdown()
    streams = capfd.readouterr()
    rows = rows_of(out)
    assert any(r["score"] is not None for r in rows) and any(r["error"] for r in rows)  # both paths ran
    _assert_nowhere([out, tmp_path / "cache"], streams.out + streams.err)


def test_credentials_in_the_judge_url_are_not_recorded(monkeypatch, tmp_path, capfd):
    _secrets(monkeypatch, tmp_path)
    server = _judge_server("x")
    url = server.url.replace("http://", f"http://user:{CANARY}@") + f"?api-key={CANARY}"
    try:
        out = tmp_path / "run"
        _run_cli(["run", "--tasks", "gveval", "--limit", "1", "--frames", "4", "--output", str(out),
                  "--judge-model", "judge-test", "--judge-base-url", url, "--judge-api-key-env", "VAMBA_TEST_JUDGE_KEY"])
    finally:
        server.httpd.shutdown()
    streams = capfd.readouterr()
    assert CANARY not in (out / store.REPORT).read_text(encoding="utf-8")  # the report masks it already
    _assert_nowhere([out], streams.out + streams.err)


def test_parity_page_escapes_everything(hostile_run, tmp_path):
    parity = pytest.importorskip("vamba_eval.interop.parity")
    run = tmp_path / "run"
    shutil.copytree(hostile_run, run)
    audit(parity.render(run, tmp_path / "parity.html"))


def test_bench_page_escapes_everything(tmp_path):
    bench = pytest.importorskip("vamba_eval.bench.page")
    rows = [{"model": PAYLOADS[0], "variant": PAYLOADS[1], "mode": mode, "frames": frames, "status": status,
             "time_s": 0.5 * frames, "gpu": HOSTILE, "size": PAYLOADS[3], "run_id": PAYLOADS[5], "error": HOSTILE,
             "versions": {PAYLOADS[7]: PAYLOADS[8]}, "dtype": PAYLOADS[9], "git_sha": PAYLOADS[10]}
            for mode in ("prefill", "decode") for frames, status in ((8, "ok"), (16, "ok"), (32, "oom"))]
    page = tmp_path / "bench.html"
    page.write_text(bench.render_html(rows, [HOSTILE]), encoding="utf-8")
    audit(page, must_show=(HOSTILE, PAYLOADS[0]))
