"""The judge client's reply cache, concurrency limit, Retry-After, usage/cost counters and
malformed replies — against a REAL local HTTP server that the real ``openai`` client talks to
(same pattern as test_judge_gveval.py, plus raw bodies, headers and in-flight counting)."""

from __future__ import annotations

import json
import threading
import time
from email.utils import formatdate
from types import SimpleNamespace
from typing import Any, Callable, Optional

import numpy as np
import pytest

from judge_server import Server  # noqa: E402
from vamba_eval.judge import (
    Judge, JudgeConfig, JudgeReplyMalformed, JudgeReplyUnusable, build_judge, record_judge_usage)
from vamba_eval.judge_cache import LIST_PRICES_PER_1K, request_key, retry_after_s
from vamba_eval.run.process import JudgeUnavailable, WorkUnit, run_unit
from vamba_eval.tasks import mlvu_gen
from vamba_eval.tasks._gveval_score import judge_caption
from vamba_eval.types import Prediction, Sample, VideoRef
from vamba_eval.video import FrameSpec

CANARY = "sk-canary-cache-0a1b2c3d4e5f6a7b8c9d"
KEY_ENV = "VAMBA_TEST_JUDGE_CACHE_KEY"
HI = [{"role": "system", "content": "hi"}]


def completion(text: str, alternatives: Optional[list[tuple[str, float]]] = None, prompt_tokens: int = 100) -> dict:
    """A chat.completion whose words are tokens; ``alternatives`` (token, logprob) go on every token."""
    words = [w for w in text.split(" ") if w]
    top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in (alternatives or [])]
    content = [{"token": w, "logprob": -0.5, "bytes": list(w.encode()), "top_logprobs": top} for w in words]
    return {"id": "c", "object": "chat.completion", "created": 0, "model": "judge-test",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": {"content": content},
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                      "total_tokens": prompt_tokens + len(words)}}


@pytest.fixture(scope="module")
def server():
    srv = Server()
    yield srv
    srv.httpd.shutdown()


@pytest.fixture()
def make(server, monkeypatch, tmp_path) -> Callable[..., Judge]:
    """A judge on the local server with its cache in tmp_path/judge; keyword args override the config."""
    server.script, server.requests, server.times, server.responder = [], [], [], None
    server.delay_s, server.in_flight, server.max_in_flight = 0.0, 0, 0
    monkeypatch.setenv(KEY_ENV, CANARY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("VAMBA_EVAL_CACHE", str(tmp_path / "root"))

    def build(**over: Any) -> Judge:
        settings = dict(model="judge-test", base_url=server.url, api_key_env=KEY_ENV, timeout_s=10, max_retries=2,
                        backoff_s=0.01, cache_dir=str(tmp_path / "judge"))
        return Judge(JudgeConfig(**{**settings, **over}))
    return build


# --------------------------------------------------------------------------- the cache


def test_a_cache_hit_sends_no_request_and_returns_the_same_reply(make, server, tmp_path):
    server.responder = lambda body: (200, completion("score $ 7", [("7", -0.1), ("8", -2.5)]))
    first = make().chat(HI, temperature=1, logprobs=True, top_logprobs=5)
    judge = make()  # a new Judge (a new run): the cache is on disk
    again = judge.chat(HI, temperature=1, logprobs=True, top_logprobs=5)
    assert len(server.requests) == 1
    assert (again.text, again.tokens, dict(again.usage), again.model) == \
        (first.text, first.tokens, dict(first.usage), first.model)
    assert (first.cached, first.api_attempts, again.cached, again.api_attempts) == (False, 1, True, 0)
    assert again.to_record()["cached"] is True
    files = list((tmp_path / "judge").rglob("*.json"))
    assert len(files) == 1 and files[0].parent.name == files[0].stem[:2]
    assert not list((tmp_path / "judge").rglob("*.tmp"))  # atomic write: no leftovers
    use = judge.usage()
    assert (use["calls"], use["requests"], use["cache_hits"], use["prompt_tokens"], use["cached_prompt_tokens"]) == \
        (1, 0, 1, 0, 100)


def test_any_change_to_what_is_sent_misses(make, server):
    server.responder = lambda body: (200, completion("ok"))
    judge = make()
    image = {"role": "user", "content": [{"type": "text", "text": "grade"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
    other_image = json.loads(json.dumps(image).replace("AAAA", "AAAB"))
    variants = [dict(messages=HI), dict(messages=[{"role": "system", "content": "hi!"}]),
                dict(messages=[image]), dict(messages=[other_image]),
                dict(messages=HI, temperature=1.0), dict(messages=HI, temperature=0.0), dict(messages=HI, top_p=0.9),
                dict(messages=HI, logprobs=True), dict(messages=HI, logprobs=True, top_logprobs=5),
                dict(messages=HI, max_tokens=64), dict(messages=HI, sample_index=1)]
    for n, kw in enumerate(variants, 1):
        judge.chat(**kw)
        assert len(server.requests) == n, kw
    for kw in variants:  # every one of them is now a hit
        assert judge.chat(**kw).cached
    make(model="judge-other").chat(HI)
    assert len(server.requests) == len(variants) + 1 and server.requests[-1]["body"]["model"] == "judge-other"
    params = {"model": "m", "messages": HI}
    assert request_key(params, "http://a:1/v1") != request_key(params, "http://b:1/v1")
    assert request_key(params, "http://a:1/v1") != request_key(params, "http://a:1/v1?api-version=2")
    assert request_key(params, "http://a:1/v1") == request_key(params, "http://user:pw@a:1/v1/")  # no credentials


def test_the_cache_never_holds_the_key_nor_the_messages(make, server, tmp_path):
    image_url = "data:image/png;base64," + "QUJD" * 50
    msg = [{"role": "user", "content": [{"type": "text", "text": "secret prompt"},
                                        {"type": "image_url", "image_url": {"url": image_url}}]}]
    server.script = [(200, completion("fine"))]
    judge = make()
    judge.chat(msg)
    assert CANARY not in server.requests[0]["raw"]  # the key is not in the request body at all
    text = next((tmp_path / "judge").rglob("*.json")).read_text()
    stored = json.loads(text)
    assert CANARY not in text and "sk-canary" not in text and image_url not in text and "secret prompt" not in text
    assert stored["request"]["endpoint"] == server.url and len(stored["request"]["messages_sha256"]) == 64
    server.script = [(200, completion(f"echo {CANARY}")), (200, completion(f"echo {CANARY}"))]
    judge.chat(HI)  # a reply carrying the key is used but not stored
    judge.chat(HI)
    assert len(server.requests) == 3 and judge.usage()["cache_skipped"] == 2
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert CANARY not in path.read_text(errors="replace"), path


def test_gveval_retries_are_new_samples_and_a_rerun_replays_them(make, server):
    def verdict() -> Any:
        return judge_caption(make(), "Grade the caption. Answer $N$.", None, accr=False)

    no_marker = (200, completion("about eighty"))
    scored = (200, completion("score is $ 80 $", [("80", -0.2), ("70", -1.8)]))
    server.script = [no_marker, scored]
    first = verdict()
    assert first.record["attempts"] == 2 and len(server.requests) == 2
    assert [r["body"]["temperature"] for r in server.requests] == [1.0, 1.0]
    again = verdict()  # a re-run: both attempts replayed, nothing sent
    assert len(server.requests) == 2 and again.scores == first.scores and again.record["attempts"] == 2
    assert again.record["reply"]["cached"] is True
    server.script = [no_marker] * 3
    with pytest.raises(JudgeReplyUnusable, match="no scorable judge reply in 3 attempts"):
        judge_caption(make(), "another prompt $N$", None, accr=False)
    assert len(server.requests) == 5  # three attempts, three keys, three requests
    with pytest.raises(JudgeReplyUnusable):  # a re-run replays the same three unusable samples
        judge_caption(make(), "another prompt $N$", None, accr=False)
    assert len(server.requests) == 5
    server.script = [scored]  # --no-judge-cache draws new samples
    assert judge_caption(make(cache=False), "another prompt $N$", None, accr=False).scores == first.scores
    assert len(server.requests) == 6


def test_build_judge_reads_judge_cache(make, tmp_path):
    cfg = SimpleNamespace(judge_model="m", judge_base_url="http://127.0.0.1:9/v1", judge_api_key_env=KEY_ENV,
                          judge_prompts=None)
    on = build_judge(cfg)
    assert on.config.cache and on.cache_folder() == tmp_path / "root" / "judge"
    off = build_judge(SimpleNamespace(**vars(cfg), judge_cache=False))
    assert off.config.cache is False and off.cache_folder() is None
    assert off.describe()["cache"] is False and "cache_dir" not in json.dumps(off.describe())


# --------------------------------------------------------------------------- concurrency


def test_concurrent_requests_are_limited_process_wide(make, server):
    server.delay_s = 0.15
    server.responder = lambda body: (200, completion("ok"))
    judges = [make(max_concurrency=2, cache=False), make(max_concurrency=2, cache=False)]  # same endpoint: one limit
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            judges[i % 2].chat([{"role": "system", "content": f"q{i}"}])
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(server.requests) == 8
    assert server.max_in_flight == 2
    assert sum(j.usage()["calls"] for j in judges) == 8 and sum(j.usage()["replies"] for j in judges) == 8


# --------------------------------------------------------------------------- rate limits


def test_429_honours_retry_after_then_succeeds(make, server):
    slow_down = {"error": {"message": "rate limited"}}
    server.script = [(429, slow_down, {"Retry-After": "0.4"}), (200, completion("ok"))]
    judge = make(cache=False)
    assert judge.chat(HI).api_attempts == 2
    assert server.times[1] - server.times[0] >= 0.38  # not the 0.01-s backoff
    server.script, server.times = [(429, slow_down, {"Retry-After": "3600"}), (200, completion("ok"))], []
    capped = make(cache=False, max_retry_after_s=0.2)
    t0 = time.monotonic()
    capped.chat(HI)
    assert 0.18 <= server.times[1] - server.times[0] and time.monotonic() - t0 < 2.0
    assert judge.usage()["rate_limited"] == 1 and capped.usage()["rate_limited"] == 1
    assert retry_after_s({"retry-after-ms": "250"}, 60) == 0.25 and retry_after_s({}, 60) is None
    assert retry_after_s({"retry-after": formatdate(time.time() - 10, usegmt=True)}, 60) == 0.0
    assert 4 < retry_after_s({"retry-after": formatdate(time.time() + 6, usegmt=True)}, 60) <= 6
    assert retry_after_s({"retry-after": "soon"}, 60) is None


# --------------------------------------------------------------------------- usage and cost


def test_usage_counters_and_cost(make, server, tmp_path):
    server.responder = lambda body: (200, completion("a b c d", prompt_tokens=1000))
    judge = make(model="gpt-4o-2024-05-13")
    threads = [threading.Thread(target=judge.chat, args=([{"role": "system", "content": f"q{i % 4}"}],))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    judge.chat([{"role": "system", "content": "q0"}])  # a hit
    use = judge.usage()
    assert (use["calls"], use["requests"], use["replies"], use["cache_hits"], use["failures"]) == (5, 4, 4, 1, 0)
    assert (use["prompt_tokens"], use["completion_tokens"], use["cache_writes"]) == (4000, 16, 4)
    p, c = LIST_PRICES_PER_1K["gpt-4o-2024-05-13"]
    assert use["estimated_cost_usd"] == pytest.approx((4000 * p + 16 * c) / 1000)
    assert use["estimated_cost_saved_by_cache_usd"] == pytest.approx((1000 * p + 4 * c) / 1000)
    assert "may be outdated" in use["price_source"]
    own = make(model="judge-x", price_per_1k=(1.0, 2.0), cache=False)
    own.chat(HI)
    assert own.usage()["estimated_cost_usd"] == pytest.approx((1000 * 1.0 + 4 * 2.0) / 1000)
    unknown = make(model="judge-x", cache=False)
    server.responder = lambda body: (400, {"error": {"message": "bad request"}})
    with pytest.raises(JudgeUnavailable):
        unknown.chat(HI)
    assert unknown.usage()["failures"] == 1 and unknown.usage()["estimated_cost_usd"] is None
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": {"judge": {"configured": True, "model": "gpt-4o-2024-05-13"}}}))
    written = record_judge_usage(run, judge)
    conf = json.loads((run / "config.json").read_text())
    assert conf["model"]["judge"]["usage"] == written and written["cache_hits"] == 1
    assert conf["model"]["judge"]["model"] == "gpt-4o-2024-05-13" and CANARY not in json.dumps(conf)
    assert record_judge_usage(run, None) is None


# --------------------------------------------------------------------------- bad replies


@pytest.mark.parametrize("body, kind, message", [
    (b"not json", JudgeReplyMalformed, r"the HTTP 200 body is not JSON \(JSONDecodeError: Expecting value"),
    ({"id": "x", "object": "chat.completion"}, JudgeReplyMalformed, r"not a chat completion \(no choices\[0\]\.message"),
    ({"choices": [{"index": 0, "message": {"role": "assistant", "content": 42}}]}, JudgeReplyMalformed,
     "content is int, not text"),
    (b"[1, 2]", JudgeReplyMalformed, "not a chat completion"),
])
def test_malformed_replies_raise_judge_unavailable(make, server, body, kind, message):
    server.responder = lambda b: (200, body)
    judge = make()
    with pytest.raises(kind, match=f"no usable answer after 3 attempts \\(malformed reply: .*{message}") as info:
        judge.chat(HI)
    assert isinstance(info.value, JudgeUnavailable) and len(server.requests) == 3
    assert judge.usage()["failures"] == 1 and judge.usage()["cache_writes"] == 0


def test_server_errors_and_timeouts_raise_judge_unavailable(make, server):
    server.responder = lambda b: (500, {"error": {"message": "internal"}})
    with pytest.raises(JudgeUnavailable, match=r"after 3 attempts \(HTTP 500: internal\)") as info:
        make().chat(HI)
    assert type(info.value) is JudgeUnavailable
    server.responder, server.delay_s, server.requests = (lambda b: (200, completion("late"))), 0.6, []
    with pytest.raises(JudgeUnavailable, match=r"after 2 attempts \(APITimeoutError"):
        make(timeout_s=0.2, max_retries=1).chat(HI)
    assert len(server.requests) == 2


def test_a_malformed_judge_reply_is_a_recorded_sample_error(make, server, tmp_path):
    """Through the runner: the sample keeps its response and gets an error with the reason — no score."""
    server.responder = lambda b: (200, b"<html>proxy error</html>")
    sample = Sample("mlvu_gen", "1_summary_0", VideoRef(str(tmp_path / "v.mp4")), "Summarise the video.", (), "",
                    categories={"task": ("summary",)}, meta={"reference": "Waves hit the rocks."})
    unit = WorkUnit("mlvu_gen", sample, FrameSpec(num_frames=2), str(tmp_path))
    decoded = SimpleNamespace(frames=np.zeros((2, 28, 28, 3), np.uint8), indices=(0, 1), times=(0.0, 1.0))
    model = SimpleNamespace(generate=lambda reqs: [Prediction("Waves.")])
    rec = run_unit(unit, mlvu_gen.TASK, decoded, model, use_subtitles=False, scoring="official", max_new_tokens=8,
                   judge=make())
    assert rec.error is not None and rec.error.type == "JudgeReplyMalformed" and "not JSON" in rec.error.message
    assert rec.score is None and rec.correct is None and rec.response == "Waves."
    assert CANARY not in rec.model_dump_json()
