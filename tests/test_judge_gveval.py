"""The LLM judge client and G-VEval, against a REAL local HTTP server speaking the OpenAI
chat-completions protocol (the real ``openai`` client talks to it over 127.0.0.1)."""

from __future__ import annotations

import base64
import io
import json
import math
import pickle
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np
import pytest
from PIL import Image
from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).resolve().parent))

import video_fixtures as vf  # noqa: E402
from judge_server import Server  # noqa: E402

from vamba_eval.judge import (  # noqa: E402
    Judge, JudgeConfig, JudgeConfigError, JudgeReplyUnusable, build_judge, make_judge)
from vamba_eval.records import SampleRecord, dump_json_line  # noqa: E402
from vamba_eval.run.process import JudgeUnavailable, score_fields  # noqa: E402
from vamba_eval.task_api import DataError  # noqa: E402
from vamba_eval.tasks import gveval  # noqa: E402
from vamba_eval.tasks._gveval_score import (  # noqa: E402
    composite_indices, expected_score, join_references, video_visual)
from vamba_eval.types import Sample, ScoredSample, VideoRef  # noqa: E402

CANARY = "sk-canary-5f0c1d2e3a4b5c6d7e8f9a0b"
KEY_ENV = "VAMBA_TEST_JUDGE_KEY"

# --------------------------------------------------------------------------- fake server


def completion(tokens: list[tuple[str, list[tuple[str, float]]]]) -> dict[str, Any]:
    """A chat.completion body whose logprobs.content lists ``tokens`` with their top alternatives."""
    content = [{"token": tok, "logprob": top[0][1] if top else -0.01, "bytes": list(tok.encode()),
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top]}
               for tok, top in tokens]
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "judge-test",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": {"content": content},
                         "message": {"role": "assistant", "content": "".join(t for t, _ in tokens)}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": len(tokens), "total_tokens": 100 + len(tokens)}}


def words(text: str) -> list[tuple[str, list[tuple[str, float]]]]:
    """Word tokens carrying their leading space, as BPE tokenisers emit them."""
    return [(w, []) for w in re.findall(r"\s*\S+", text)]


def scored_reply(alternatives: list[tuple[str, float]], marker: str = "$", prefix: str = "Looks right. The final score is ",
                 ) -> list[tuple[str, list[tuple[str, float]]]]:
    """prefix, marker, the sampled score token (top alternatives given as PROBABILITIES), marker."""
    top = [(t, math.log(p)) for t, p in alternatives]
    return words(prefix) + [(f" {marker}", []), (alternatives[0][0], top), (marker, []), (".", [])]


@pytest.fixture(scope="module")
def server():
    srv = Server()
    yield srv
    srv.httpd.shutdown()


@pytest.fixture()
def judge(server, monkeypatch):
    server.script, server.requests, server.responder = [], [], None
    monkeypatch.setenv(KEY_ENV, CANARY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in (gveval.MODE_ENV, gveval.ACCR_ENV):
        monkeypatch.delenv(name, raising=False)
    return Judge(JudgeConfig(model="judge-test", base_url=server.url, api_key_env=KEY_ENV, timeout_s=10,
                             max_retries=3, backoff_s=0.01, cache=False))  # the cache: test_judge_cache.py


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gveval-demo")
    gveval.write_demo(folder, 0)
    return gveval.load(folder)


def with_options(judge: Judge, **options: Any) -> Judge:
    return Judge(judge.config, options)


# --------------------------------------------------------------------------- the score


def test_expectation_after_the_marker_hand_computed(judge, server, demo):
    server.script = [(200, completion(scored_reply([("8", 0.5), ("9", 0.3), ("x", 0.2)])))]
    score = gveval.judge_score("A yellow screen shows the number 3.", demo[0], "official", judge)
    assert score.value == pytest.approx(8 * 0.5 / 0.8 + 9 * 0.3 / 0.8)  # 8.375: "x" dropped, renormalised
    assert score.judge["alternatives"]["$"] == [["8", pytest.approx(0.625)], ["9", pytest.approx(0.375)]]
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == f"Bearer {CANARY}"
    body = req["body"]
    assert (body["model"], body["temperature"], body["top_p"], body["logprobs"], body["top_logprobs"]) == \
        ("judge-test", 1.0, 1.0, True, 5)
    assert score.judge["mode"] == "reference-free" and score.judge["prompt"].startswith("paraphrase:vid/ref-free.txt")
    assert "not the G-VEval authors' text" in score.judge["prompt"]


def test_expected_score_uses_exact_integer_tokens_only():
    value, weights = expected_score([(" 7", math.log(0.4)), ("100", math.log(0.3)), ("07", math.log(0.2)),
                                     ("50", math.log(0.1))])
    assert value == pytest.approx((100 * 0.3 + 50 * 0.1) / 0.4) and set(weights) == {"100", "50"}


def test_composite_is_1536x512_and_tile_k_holds_frame_k(tmp_path):
    path = vf.write_video(tmp_path / "v.mp4", 30)
    visual = video_visual(str(path))
    assert visual.frames == (0, 9, 19) == tuple(np.linspace(0, 29, 4, dtype=int)[:-1])
    assert visual.detail == "high" and visual.data_url.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(visual.data_url.split(",", 1)[1]))).convert("RGB")
    assert image.size == (1536, 512)
    for k, index in enumerate(visual.frames):
        tile = image.crop((512 * k, 0, 512 * (k + 1), 462)).resize((vf.W, vf.H), Image.BILINEAR)
        assert vf.read_index(np.asarray(tile)) == index
        band = np.asarray(image.crop((512 * k, 462, 512 * (k + 1), 512)))
        assert band.mean() > 200 and band.min() < 60  # white band with dark "Frame k" text
    assert composite_indices(1) == [0, 0, 0] and composite_indices(100) == [0, 33, 66]


def test_references_are_joined_with_the_authors_quirk(judge, server, monkeypatch):
    assert join_references(["a dog runs", "a puppy plays"]) == "'a dog runs'; 'a puppy plays"
    server.script = [(200, completion(scored_reply([("70", 0.9), ("60", 0.1)])))]
    sample = Sample("gveval", "s1", VideoRef("unused.mp4"), "", (), "",
                    meta={"references": ("a dog runs", "a puppy plays")})
    visual = SimpleNamespace(kind="vid", data_url="data:image/png;base64,AAAA", detail="high",
                             to_record=lambda: {"kind": "vid"})
    monkeypatch.setattr(gveval, "_visual", lambda s: visual)  # the text matters here; the composite has its own test
    score = gveval.judge_score("  A dog\n runs. ", sample, "official", with_options(judge, gveval_mode="combined"))
    content = server.requests[0]["body"]["messages"][0]["content"]
    text = content[0]["text"]
    assert "'a dog runs'; 'a puppy plays\n" in text and "plays'" not in text
    assert "A dog runs." in text  # caption whitespace-normalised
    assert content[1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"}}
    assert score.value == pytest.approx(70 * 0.9 + 60 * 0.1)


def test_accr_reads_the_four_markers(judge, server, demo):
    dims = [("α", [("80", 0.5), ("90", 0.5)]), ("β", [("60", 1.0)]), ("ψ", [("40", 0.25), ("hi", 0.5), ("50", 0.25)]),
            ("δ", [("100", 0.9), ("95", 0.1)])]
    tokens = words("Reasons here.")
    for marker, alts in dims:
        tokens += scored_reply(alts, marker=marker, prefix=" The score is")
    server.script = [(200, completion(tokens))]
    score = gveval.judge_score("a caption", demo[0], "official", with_options(judge, gveval_accr=True))
    want = {"accuracy": 85.0, "completeness": 60.0, "conciseness": 45.0, "relevance": 99.5}
    assert score.judge["scores"] == pytest.approx({**want, "mean": sum(want.values()) / 4})
    assert score.value == pytest.approx(sum(want.values()) / 4)
    assert score.judge["prompt"].startswith("paraphrase:vid/accr/ref-free.txt")
    assert json.loads(score.extraction.answer)["variant"] == "accr"


# --------------------------------------------------------------------------- retries and failures


def test_api_errors_are_retried_then_succeed(judge, server):
    ok = completion(scored_reply([("5", 1.0)]))
    server.script = [(500, {"error": {"message": "boom"}}), (429, {"error": {"message": "slow down"}}), (200, ok)]
    reply = judge.chat([{"role": "system", "content": "hi"}], logprobs=True, top_logprobs=5)
    assert reply.api_attempts == 3 and len(server.requests) == 3 and reply.text.endswith("score is $5$.")
    assert reply.tokens[-3].top == (("5", 0.0),)


def test_a_timeout_is_retried(judge, server):
    def slow(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        time.sleep(1.0)
        return 200, completion(words("late"))

    server.script = [slow, (200, completion(words("on time")))]
    quick = Judge(JudgeConfig(**{**vars(judge.config), "timeout_s": 0.3}))
    reply = quick.chat([{"role": "system", "content": "hi"}])
    assert reply.text == "on time" and reply.api_attempts == 2 and len(server.requests) == 2


def test_retries_exhausted_raise_judge_unavailable(judge, server):
    server.responder = lambda body: (503, {"error": {"message": "overloaded"}})
    with pytest.raises(JudgeUnavailable, match=r"no usable answer after 4 attempts \(HTTP 503: overloaded\)"):
        judge.chat([{"role": "system", "content": "hi"}])
    assert len(server.requests) == 4


def test_refused_request_fails_at_once_and_hides_the_key(judge, server):
    server.responder = lambda body: (401, {"error": {"message": f"Incorrect API key provided: {CANARY}"}})
    with pytest.raises(JudgeUnavailable) as info:
        judge.chat([{"role": "system", "content": "hi"}])
    assert len(server.requests) == 1 and "HTTP 401" in str(info.value) and "sk-canary" not in str(info.value)


def test_unscorable_replies_are_retried_then_a_recorded_failure(judge, server, demo):
    no_marker = completion(words("I would say about eighty."))
    no_number = completion(scored_reply([("eighty", 0.9), ("high", 0.1)]))
    server.script = [(200, no_marker), (200, completion(scored_reply([("42", 1.0)])))]
    score = gveval.judge_score("cap", demo[0], "official", judge)
    assert score.value == pytest.approx(42) and score.flags == ("judge_retried",)
    assert score.judge["attempts"] == 2 and "no '$' marker" in score.judge["unusable_replies"][0]
    server.script, server.requests = [(200, no_marker), (200, no_number), (200, no_marker)], []
    with pytest.raises(JudgeReplyUnusable, match=r"no scorable judge reply in 3 attempts .*no integer 0–100") as info:
        gveval.judge_score("cap", demo[0], "official", judge)
    assert isinstance(info.value, JudgeUnavailable) and len(server.requests) == 3


# --------------------------------------------------------------------------- the API key


def test_api_key_never_reaches_records(judge, server, demo):
    server.script = [(200, completion(scored_reply([("77", 1.0)])))]
    task = gveval.TASK
    fields = score_fields(task, demo[1], f"caption mentioning {CANARY}", "official", judge)
    record = SampleRecord(task="gveval", sample_id=demo[1].sample_id, video="v.mp4", video_key="v", **fields)
    stored = dump_json_line(record)
    assert record.score == pytest.approx(77) and record.judge["judge"]["model"] == "judge-test"
    server.script = [(200, completion(words(f"echo {CANARY}")))]
    reply = judge.chat([{"role": "system", "content": "x"}])
    for text in (stored, json.dumps(judge.describe()), json.dumps(reply.to_record()),
                 repr(pickle.loads(pickle.dumps(judge)).__dict__)):
        assert CANARY not in text and "sk-canary" not in text
    assert CANARY not in pickle.dumps(judge).decode("latin-1")
    assert judge.describe()["api_key_env"] == KEY_ENV


def test_build_judge_from_the_run_config(monkeypatch, tmp_path):
    cfg = SimpleNamespace(judge_model=None, judge_base_url=None, judge_api_key_env=KEY_ENV, judge_prompts=None)
    assert build_judge(cfg) is None
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(JudgeConfigError, match=KEY_ENV):
        build_judge(SimpleNamespace(**{**vars(cfg), "judge_model": "gpt-4o-2024-05-13"}))
    monkeypatch.setenv(KEY_ENV, CANARY)
    with pytest.raises(JudgeConfigError, match="--judge-model"):
        build_judge(SimpleNamespace(**{**vars(cfg), "judge_base_url": "http://127.0.0.1:9/v1"}))
    built = build_judge(SimpleNamespace(**{**vars(cfg), "judge_model": "m", "gveval_mode": "ref-only",
                                           "gveval_accr": True, "judge_base_url": "http://u:pw@h:8000/v1?k=1"}))
    assert built.describe()["base_url"] == "http://h:8000/v1" and gveval.resolve_options(built) == ("reference-only", True)
    with pytest.raises(JudgeConfigError, match="not a folder"):
        make_judge("m", prompts_dir=str(tmp_path / "nope"), api_key_env=KEY_ENV)
    with pytest.raises(JudgeConfigError, match="mode 'bogus'"):
        gveval.resolve_options(Judge(built.config, {"gveval_mode": "bogus"}))


def test_authors_prompt_files_are_loaded_from_a_user_folder(judge, server, demo, tmp_path):
    (tmp_path / "vid").mkdir()
    (tmp_path / "vid" / "ref-only.txt").write_text("USER PROMPT refs={{Reference}} cap={{Caption}} end $N$")
    custom = Judge(JudgeConfig(**{**vars(judge.config), "prompts_dir": str(tmp_path)}), {"gveval_mode": "reference-only"})
    server.script = [(200, completion(scored_reply([("33", 1.0)])))]
    score = gveval.judge_score("c", demo[0], "official", custom)
    assert score.judge["prompt"] == f"file:{tmp_path / 'vid' / 'ref-only.txt'}"
    assert server.requests[0]["body"]["messages"][0]["content"][0]["text"].startswith("USER PROMPT refs='the video has")
    with pytest.raises(DataError, match="no G-VEval prompt vid/combined.txt"):
        gveval.check_judge(Judge(custom.config, {"gveval_mode": "combined"}))


def test_reference_modes_need_references(judge, demo):
    bare = Sample("gveval", "x", demo[0].video, "", (), "", meta={"references": ()})
    with pytest.raises(JudgeUnavailable, match="needs reference captions"):
        gveval.judge_score("c", bare, "official", with_options(judge, gveval_mode="combined"))


# --------------------------------------------------------------------------- data, aggregation, meta


def test_loader_demo_and_bad_records(demo, tmp_path):
    assert [s.sample_id for s in demo] == ["demo01", "demo02", "demo03", "demo04"]
    assert all(Path(s.video.path).is_file() and s.meta["references"] for s in demo)
    (tmp_path / "gveval.jsonl").write_text('{"id": "a", "video": "a.mp4", "references": "one string"}\n')
    with pytest.raises(DataError, match=r"gveval.jsonl: line 1: 'references' must be a list"):
        gveval.load(tmp_path)


def test_aggregate_mean_with_clustered_interval_and_dimensions():
    def ss(i: int, video: str, dims: dict[str, float], error: Optional[str] = None) -> ScoredSample:
        mean = sum(dims.values()) / 4
        extracted = json.dumps({"mode": "reference-free", "variant": "accr", "scores": {**dims, "mean": mean}})
        return ScoredSample(f"s{i}", video, {}, None if error else extracted, None, error=error,
                            score=None if error else mean)
    dims = [dict(accuracy=a, completeness=b, conciseness=c, relevance=d)
            for a, b, c, d in [(80, 60, 90, 70), (40, 50, 60, 70), (100, 90, 80, 70), (20, 30, 40, 50)]]
    scored = [ss(i, f"v{i // 2}", d) for i, d in enumerate(dims)] + [ss(9, "v9", dims[0], error="JudgeReplyUnusable")]
    res = gveval.aggregate(scored, "official")
    means = [sum(d.values()) / 4 for d in dims]
    assert res["metric"] == "gveval" and res["n_scored"] == 4 and res["n_failed"] == 1
    assert res["overall"]["value"] == pytest.approx(np.mean(means)) and res["overall"]["n_clusters"] == 2
    half = 1.96 * res["overall"]["stderr"]
    assert res["overall"]["ci95"] == pytest.approx([np.mean(means) - half, np.mean(means) + half])
    assert res["breakdowns"]["dimension"]["accuracy"]["value"] == pytest.approx(60.0)
    assert list(res["breakdowns"]["mode"]) == ["reference-free (accr)"]


def test_meta_evaluate_matches_scipy(judge, server, tmp_path):
    humans = {"c1": [[4, 3, 4, 5, 4.0], [4, 3, 4, 4, 3.75]], "c2": [[2, 1, 1, 1, 1.25], [3, 3, 2, 3, 2.75]],
              "c3": [[5, 3, 4, 3, 3.75], [4, 4, 3, 3, 3.5]], "c4": [[3, 2, 4, 4, 3.25], [2, 3, 4, 3, 3.0]],
              "c5": [[1, 1, 1, 1, 1.0], [1, 2, 1, 1, 1.25]]}
    data = {f"vid{i}": {"vname": f"clip{i}.avi", "ref": ["a  man\nruns", "someone jogs"], "candidate": cand,
                        "human_score": humans[cand]} for i, cand in enumerate(humans)}
    path = tmp_path / "MSVD-Eval.json"
    path.write_text(json.dumps(data))
    judged = {"c1": (70, 60, 80, 90), "c2": (20, 10, 30, 20), "c3": (90, 50, 60, 40), "c4": (50, 40, 70, 60)}

    def respond(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        text = body["messages"][0]["content"]
        assert body["messages"][0]["role"] == "system" and "'a man runs'; 'someone jogs\n" in text
        cand = text.rsplit("Caption to grade:\n", 1)[1].split("\n", 1)[0]
        if cand not in judged:
            return 200, completion(words("cannot say"))  # c5: never scorable → a listed failure
        tokens: list = []
        for marker, value in zip("αβψδ", judged[cand]):
            tokens += scored_reply([(str(value), 1.0)], marker=marker, prefix=" score")
        return 200, completion(tokens)

    server.responder = respond
    out = gveval.meta_evaluate(path, judge, "reference-only", accr=True, workers=3)
    assert (out["n_items"], out["n_scored"], out["n_failed"]) == (5, 4, 1) and out["failures"][0]["id"] == "vid4"
    keys = ["c1", "c2", "c3", "c4"]
    for d, dim in enumerate(["accuracy", "completeness", "conciseness", "relevance"]):
        g = [judged[k][d] for k in keys]
        h = [np.mean([row[d] for row in humans[k]]) for k in keys]
        assert out["correlations"][dim]["tau_b"] == pytest.approx(kendalltau(g, h, variant="b").statistic)
        rep_g = [x for x in g for _ in range(2)]
        rep_h = [row[d] for k in keys for row in humans[k]]
        assert out["correlations"][dim]["tau_b_per_annotator"] == pytest.approx(kendalltau(rep_g, rep_h, variant="b").statistic)
        assert out["correlations"][dim]["tau_c_per_annotator"] == pytest.approx(kendalltau(rep_g, rep_h, variant="c").statistic)
    g_avg = [np.mean(judged[k]) for k in keys]
    h_avg = [np.mean([row[4] for row in humans[k]]) for k in keys]
    assert out["correlations"]["average"]["tau_b"] == pytest.approx(kendalltau(g_avg, h_avg, variant="b").statistic)
    assert CANARY not in json.dumps(out)
    with pytest.raises(ValueError, match="pass video_root"):
        gveval.meta_evaluate(path, judge, "reference-free")


def test_run_gveval_end_to_end_with_a_local_judge(server, monkeypatch, tmp_path):
    """`vamba-eval run --tasks gveval --judge-model … --judge-base-url …`: scores land in results.json,
    the judge is recorded, and the API key appears nowhere in the run directory."""
    from vamba_eval.cli import main

    server.script, server.requests = [], []
    server.responder = lambda body: (200, completion(scored_reply([("80", 0.5), ("90", 0.5)])))
    monkeypatch.setenv(KEY_ENV, CANARY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("VAMBA_EVAL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    main(["run", "--tasks", "gveval", "--limit", "2", "--frames", "4", "--output", str(out),
          "--judge-model", "judge-test", "--judge-base-url", server.url, "--judge-api-key-env", KEY_ENV])
    res = json.loads((out / "results.json").read_text())["tasks"]["gveval"]
    assert res["metric"] == "gveval" and res["n_failed"] == 0
    assert res["overall"]["value"] == pytest.approx(85.0)
    conf = json.loads((out / "config.json").read_text())
    assert conf["model"]["judge"]["configured"] is True
    for path in out.rglob("*"):
        if path.is_file():
            assert CANARY not in path.read_bytes().decode("utf-8", "replace"), path
    server.responder = None


def test_judge_tasks_without_a_judge_fail_before_any_model_work(tmp_path, monkeypatch, capsys):
    from vamba_eval.cli import main

    monkeypatch.setenv("VAMBA_EVAL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as exc:
        main(["run", "--tasks", "gveval", "--limit", "1", "--output", str(tmp_path / "run")])
    assert exc.value.code == 2
    assert "--judge-model" in capsys.readouterr().err
    assert not (tmp_path / "run" / "samples.jsonl").exists()
