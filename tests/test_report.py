"""HTML report: escaping, offline, banners, secrets, torn lines, breakdowns, pagination."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from vamba_eval.records import Estimate, ResultsRecord, SampleError, SampleRecord, TaskResult, dump_json_line
from vamba_eval.report import check_no_secrets, redact, render_run_report

CANARY = "sk-canaryCANARY0123456789abcdef"
XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = '"><img src=x onerror=alert(1)>'
NOTICE = "synthetic demo split in LVBench format — not LVBench"
AXES = {"lvbench": ("question_type", "duration"), "videomme": ("duration",)}


class Collector(HTMLParser):
    """Every start tag with its attributes, the text of each <script>, and all text nodes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, Any]]] = []
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.text.append(data)


def parse(path: Path) -> Collector:
    c = Collector()
    c.feed(path.read_text(encoding="utf-8"))
    c.close()
    return c


def est(correct: int, n: int) -> Estimate:
    v = 100.0 * correct / n if n else None
    return Estimate(value=v, correct=correct, n=n, stderr=4.2 if n else None,
                    ci95=[max(0.0, v - 9.0), min(100.0, v + 9.0)] if v is not None else None, n_clusters=n)


def sample(task: str, sid: str, **kw: Any) -> SampleRecord:
    base = dict(task=task, sample_id=sid, video=f"videos/{sid}.mp4", video_key=sid, gold="A",
                categories={"question_type": ["reasoning"], "duration": ["short"]},
                frame_indices=[0, 30, 60, 90], frame_times=[0.0, 1.0, 2.0, 3.0], frame_size=[448, 252],
                prompt="Which option?\n(A) cat\n(B) dog", response="A", extracted="A", extraction_rule="letter",
                correct=True, timings={"decode": 0.2, "prefill": 0.5, "generate": 0.1})
    base.update(kw)
    return SampleRecord(**base)


def build_run(tmp_path: Path, *, synthetic: bool = True, untrained: bool = True, torn: bool = False,
              extra_correct: int = 0) -> Path:
    run = tmp_path / "run"
    run.mkdir(parents=True)
    config = {
        "config": {"run_id": "demo-run", "tasks": ["lvbench", "videomme"], "model": "vamba-tiny",
                   "frames": {"num_frames": 4, "max_edge": 448}, "scoring": "official",
                   "max_new_tokens": 16, "judge_api_key": CANARY, "judge": {"auth_token": "tok-secret-value"}},
        "config_hash": "cafe1234",
        "environment": {"git_sha": "deadbeef", "packages": {"torch": "2.5.1", "jinja2": "3.1.6"},
                        "device": "cpu", "ssm_backend": "torch-ref",
                        "datasets": {"lvbench": {"path": "/data/lvbench-demo", "revision": "r1",
                                                 "synthetic": synthetic, "notice": NOTICE},
                                     "videomme": {"path": "/data/videomme", "revision": "r2", "synthetic": False}}},
        "model": {"name": "vamba-tiny", "description": "tiny VAMBA", "untrained": untrained},
    }
    (run / "config.json").write_text(json.dumps(config), encoding="utf-8")
    tasks = {
        "lvbench": TaskResult(task="lvbench", title="LVBench", overall=est(2, 3),
                              breakdowns={"question_type": {"reasoning": est(1, 2), "key info": est(1, 1)},
                                          "duration": {"short": est(2, 3)}},
                              n=5, n_scored=3, n_failed=1, n_unparsed=1, n_flagged={"random_fallback": 1}),
        "videomme": TaskResult(task="videomme", title="Video-MME", overall=est(1, 1),
                               breakdowns={"duration": {"short": est(1, 1), "long": est(0, 0)}},
                               n=1, n_scored=1, n_failed=0, n_unparsed=0),
    }
    results = ResultsRecord(run_id="demo-run", config_hash="cafe1234", synthetic=synthetic, tasks=tasks)
    (run / "results.json").write_text(results.model_dump_json(indent=2), encoding="utf-8")
    recs = [
        sample("lvbench", "lv-1"),
        sample("lvbench", "lv-2", response=f"{XSS_SCRIPT} {XSS_IMG} see https://evil.example/x.js",
               extracted="B", correct=False, prompt=f"prompt with {XSS_IMG}"),
        sample("lvbench", "lv-3", response="no idea", extracted=None, correct=None, unparsed=True),
        sample("lvbench", "lv-4", response=None, extracted=None, correct=None, timings={},
               error=SampleError(type="VideoUnreadable", message="videos/lv-4.mp4: moov atom not found; re-download")),
        sample("lvbench", "lv-5", response=f"my key is {CANARY}", extracted="A"),
        sample("videomme", "vm-1", categories={"duration": ["short"]}),
    ]
    recs += [sample("videomme", f"vm-ok-{i}", categories={"duration": ["short"]}) for i in range(extra_correct)]
    lines = [dump_json_line(r) for r in recs]
    text = "\n".join(lines) + "\n"
    if torn:
        text += lines[0][: len(lines[0]) // 2]  # a write cut short by a kill
    (run / "samples.jsonl").write_text(text, encoding="utf-8")
    return run


def test_model_output_is_escaped(tmp_path: Path) -> None:
    page = render_run_report(build_run(tmp_path))
    html = page.read_text(encoding="utf-8")
    doc = parse(page)
    scripts = [attrs for tag, attrs in doc.tags if tag == "script"]
    assert scripts == [{}]  # only the page's own inline script, no src
    assert "alert" not in doc.scripts[0]
    assert not [t for t, a in doc.tags if t == "img" and "onerror" in a]
    assert not [(t, a) for t, a in doc.tags if any(k.startswith("on") for k in a)]  # no event handlers at all
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    text = "".join(doc.text)
    assert XSS_SCRIPT in text and XSS_IMG in text  # shown verbatim as text


def test_csp_allows_only_the_page_script(tmp_path: Path) -> None:
    doc = parse(render_run_report(build_run(tmp_path)))
    csp = next(a["content"] for t, a in doc.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    digest = base64.b64encode(hashlib.sha256(doc.scripts[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp and "default-src 'none'" in csp


def test_opens_offline(tmp_path: Path) -> None:
    page = render_run_report(build_run(tmp_path))
    doc = parse(page)
    assert not [t for t, _ in doc.tags if t in ("link", "iframe", "object", "embed", "base")]
    for tag, attrs in doc.tags:
        for name, value in attrs.items():
            if name in ("src", "href", "xlink:href", "srcset", "poster", "action", "data", "xmlns"):
                assert not re.match(r"\s*(https?:)?//", value or ""), (tag, name, value)
    html = page.read_text(encoding="utf-8")
    assert not re.search(r"url\(\s*['\"]?(https?:)?//|@import", html)


def test_banners(tmp_path: Path) -> None:
    html = render_run_report(build_run(tmp_path)).read_text(encoding="utf-8")
    assert 'class="banner synthetic"' in html and NOTICE in html
    assert 'class="banner untrained"' in html and "scores are chance level by construction" in html
    clean = render_run_report(build_run(tmp_path / "b", synthetic=False, untrained=False)).read_text(encoding="utf-8")
    bundled = build_run(tmp_path / "c", synthetic=False, untrained=False)
    conf = json.loads((bundled / "config.json").read_text())
    conf["model"]["bundled"] = True
    (bundled / "config.json").write_text(json.dumps(conf))
    html = render_run_report(bundled).read_text(encoding="utf-8")
    assert 'class="banner bundled"' in html and "never seen real video" in html and "UNTRAINED" not in html
    assert 'class="banner' not in clean


def test_no_api_keys_in_page(tmp_path: Path) -> None:
    html = render_run_report(build_run(tmp_path)).read_text(encoding="utf-8")
    assert "canary" not in html.lower()  # neither the config value nor the one a model echoed
    assert "tok-secret-value" not in html
    assert "[redacted]" in html
    with pytest.raises(ValueError, match="API-key-like"):
        check_no_secrets(f"<p>{CANARY}</p>", tmp_path / "x.html")


def test_redact_keeps_numbers_and_drops_env() -> None:
    out = redact({"max_new_tokens": 16, "hf_token": "hf_x", "env": {"HOME": "/root"}, "nested": [{"password": "p"}]})
    assert out == {"max_new_tokens": 16, "hf_token": "[redacted]", "nested": [{"password": "[redacted]"}]}


def test_torn_last_line_is_skipped_with_note(tmp_path: Path) -> None:
    page = render_run_report(build_run(tmp_path, torn=True))
    html = page.read_text(encoding="utf-8")
    assert "is incomplete or invalid — skipped" in html
    assert len(re.findall(r'<details class="sample ', html)) == 6


def test_corrupt_middle_line_names_file_and_line(tmp_path: Path) -> None:
    run = build_run(tmp_path)
    lines = (run / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    lines[1] = "{not json"
    (run / "samples.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"samples\.jsonl:2"):
        render_run_report(run)


def test_breakdown_tables_for_each_axis(tmp_path: Path) -> None:
    html = render_run_report(build_run(tmp_path)).read_text(encoding="utf-8")
    for task, axes in AXES.items():
        section = html.split(f'id="task-{task}"', 1)[1].split("<section", 1)[0]
        for axis in axes:
            block = section.split(f'data-axis="{axis}"', 1)[1].split('class="breakdown"', 1)[0]
            assert "<table" in block and '<svg class="chart"' in block
            assert '<line class="ci"' in block  # CI whiskers
    assert "<td>key info</td>" in html and "66.7%" in html


def test_failures_grouped_and_statuses(tmp_path: Path) -> None:
    html = render_run_report(build_run(tmp_path)).read_text(encoding="utf-8")
    failures = html.split('id="failures"', 1)[1].split('id="samples"', 1)[0]
    assert "VideoUnreadable" in failures and "moov atom not found" in failures
    for status in ("correct", "wrong", "excluded", "failed"):
        assert f'data-status="{status}"' in html


def test_pagination_keeps_interesting_samples_inline(tmp_path: Path) -> None:
    run = build_run(tmp_path, extra_correct=5)
    html = render_run_report(run, max_samples_inline=4).read_text(encoding="utf-8")
    inline = re.findall(r'data-status="(\w+)"', html)
    assert inline and "correct" not in inline
    assert "exceed the inline limit of 4" in html
    pages = sorted(p.name for p in run.glob("samples-*.html"))
    assert pages == ["samples-1.html", "samples-2.html", "samples-3.html"]
    total = sum(len(re.findall(r'<details class="sample ', (run / p).read_text(encoding="utf-8"))) for p in pages)
    assert total == 11
    (run / "samples-9.html").write_text("<p>not ours</p>", encoding="utf-8")
    render_run_report(run)  # everything fits again: our stale pages are removed, others kept
    assert [p.name for p in run.glob("samples-*.html")] == ["samples-9.html"]


def test_repeated_sample_lines_keep_the_first_like_results(tmp_path: Path) -> None:
    run = build_run(tmp_path)
    retry = sample("lvbench", "lv-4", response="C", extracted="C", correct=False, attempt=2)
    with (run / "samples.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(dump_json_line(retry) + "\n")
    html = render_run_report(run).read_text(encoding="utf-8")
    assert "1 repeated sample line(s)" in html
    assert len(re.findall(r'<details class="sample ', html)) == 6
    assert "attempt 2" not in html  # results.json counted the first complete line


def test_thumbnail_embedded_as_data_uri(tmp_path: Path) -> None:
    run = build_run(tmp_path)
    (run / "thumbs" / "lvbench").mkdir(parents=True)
    buf = io.BytesIO()
    Image.new("RGB", (32, 8), (200, 30, 30)).save(buf, format="JPEG")
    (run / "thumbs" / "lvbench" / "lv-1.jpg").write_bytes(buf.getvalue())
    doc = parse(render_run_report(run))
    imgs = [a["src"] for t, a in doc.tags if t == "img"]
    assert len(imgs) == 1 and imgs[0].startswith("data:image/jpeg;base64,")


def test_thumbnail_path_cannot_escape_thumbs_dir(tmp_path: Path) -> None:
    run = build_run(tmp_path)
    (run / "thumbs").mkdir()
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG")
    (run / "secret.jpg").write_bytes(buf.getvalue())
    line = dump_json_line(sample("lvbench", "../../secret"))
    with (run / "samples.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")
    doc = parse(render_run_report(run))
    assert not [a for t, a in doc.tags if t == "img"]


def test_missing_results_still_renders(tmp_path: Path) -> None:
    run = build_run(tmp_path)
    (run / "results.json").unlink()
    html = render_run_report(run, out=tmp_path / "elsewhere.html").read_text(encoding="utf-8")
    assert "results.json not found" in html
