"""Bookkeeping around the judge's HTTP calls (used by ``vamba_eval.judge``; no ``openai`` here):
the on-disk reply cache, the process-wide concurrency limit, ``Retry-After`` parsing, and the
usage / cost counters.

Cache
    One JSON file per reply under ``<cache_dir>/<key[:2]>/<key>.json`` (default
    ``$VAMBA_EVAL_CACHE/judge``, i.e. ``~/.cache/vamba-eval/judge``), written atomically (tmp file +
    ``os.replace``), so concurrent threads, processes and Ray actors on one machine can share it.
    The key is the sha256 of a canonical JSON of EVERYTHING that is sent — model, endpoint (scheme,
    host, port, path, query; never user info), messages (image data URLs included), temperature,
    top_p, logprobs / top_logprobs, max_tokens — plus ``sample_index``: the judge samples (G-VEval
    asks at temperature 1), so a deliberate re-sample of the same request (the metric's retry after
    an unscorable reply) passes another index and gets its own entry, while a re-run of the whole
    evaluation replays the same replies in the same order: reproducible, and free. The API key is
    not part of the request body, hence not of the key; a reply that contains the key (a server
    echoing it) is not stored at all. Files hold the reply and a small description of the request
    (no messages, no images: their sha256 only).

Prices
    ``LIST_PRICES_PER_1K`` are OpenAI list prices (USD per 1,000 prompt / completion tokens) as
    published in 2024 for the judges the benchmarks name; they MAY BE OUTDATED — pass
    ``JudgeConfig.price_per_1k`` for your contract. Costs are estimates; unknown model → None.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional
from urllib.parse import urlsplit, urlunsplit

CACHE_FORMAT = "vamba-eval judge cache v1"
LIST_PRICES_PER_1K: dict[str, tuple[float, float]] = {  # list prices (2024), may be outdated
    "gpt-4o-2024-05-13": (0.005, 0.015),  # G-VEval's judge
    "gpt-4-turbo": (0.01, 0.03),  # MLVU generation's judge
    "gpt-4-turbo-2024-04-09": (0.01, 0.03),
}
LIST_PRICE_NOTE = "built-in OpenAI list price (2024; may be outdated)"
COUNTERS = ("calls", "requests", "replies", "cache_hits", "cache_writes", "cache_skipped", "failures",
            "rate_limited", "prompt_tokens", "completion_tokens", "cached_prompt_tokens", "cached_completion_tokens")


# --------------------------------------------------------------------------- the key


def canonical_json(data: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept, NaN refused: the same request → the same text."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def key_endpoint(url: str) -> str:
    """The endpoint as the cache key sees it: user info (credentials) and fragment dropped."""
    parts = urlsplit(url)
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), parts.query, ""))


def request_key(params: Mapping[str, Any], endpoint: str, sample_index: int = 0) -> str:
    """sha256 of everything sent (``params`` = the chat.completions body) + endpoint + sample index."""
    blob = canonical_json({"format": CACHE_FORMAT, "endpoint": key_endpoint(endpoint), "request": dict(params),
                           "sample_index": int(sample_index)})
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def describe_request(params: Mapping[str, Any], endpoint: str, sample_index: int) -> dict[str, Any]:
    """What a cache file says about its request: the settings, the messages only as a sha256."""
    settings = {k: v for k, v in params.items() if k != "messages"}
    digest = hashlib.sha256(canonical_json(params.get("messages", [])).encode("utf-8")).hexdigest()
    return {**settings, "endpoint": endpoint, "sample_index": int(sample_index), "messages_sha256": digest}


# --------------------------------------------------------------------------- the store


class JudgeCache:
    """Reply files under ``folder``; unreadable or foreign files count as misses."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).expanduser()

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> Optional[dict[str, Any]]:
        try:
            data = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or data.get("key") != key:
            return None
        reply = data.get("reply")
        return reply if isinstance(reply, dict) else None

    def put(self, key: str, reply: Mapping[str, Any], request: Mapping[str, Any], secret: Optional[str]) -> bool:
        """Store ``reply`` atomically; False (nothing written) when the text would contain ``secret``."""
        text = json.dumps({"format": CACHE_FORMAT, "key": key, "request": dict(request), "reply": dict(reply),
                           "created": datetime.now(timezone.utc).isoformat(timespec="seconds")},
                          sort_keys=True, ensure_ascii=False, indent=1)
        if secret and secret in text:
            return False
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return True


# --------------------------------------------------------------------------- concurrency


_LIMITS: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_LIMITS_LOCK = threading.Lock()


def limiter(endpoint: str, limit: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore of an (endpoint, limit): every Judge of this process that talks
    to the same server with the same limit shares it (each Ray actor is its own process)."""
    if limit < 1:
        raise ValueError(f"max_concurrency must be ≥ 1, got {limit}")
    slot = (key_endpoint(endpoint), int(limit))
    with _LIMITS_LOCK:
        if slot not in _LIMITS:
            _LIMITS[slot] = threading.BoundedSemaphore(int(limit))
        return _LIMITS[slot]


# --------------------------------------------------------------------------- rate limits


def _seconds(raw: str) -> Optional[float]:
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp() - time.time()


def retry_after_s(headers: Optional[Mapping[str, str]], cap: float) -> Optional[float]:
    """The server's ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date), capped at
    ``cap`` and at least 0; None when absent or unreadable."""
    if headers is None:
        return None
    raw_ms, raw = headers.get("retry-after-ms"), headers.get("retry-after")
    wait = _seconds(raw_ms) if raw_ms is not None else None
    if wait is not None:
        wait /= 1000.0
    elif raw is not None:
        wait = _seconds(raw)
    if wait is None or wait != wait:  # absent, unreadable or NaN
        return None
    return max(0.0, min(float(cap), wait))


# --------------------------------------------------------------------------- usage and cost


def price_for(model: str, configured: Optional[tuple[float, float]]) -> tuple[Optional[tuple[float, float]], Optional[str]]:
    """(USD per 1k prompt/completion tokens, where it comes from), or (None, None) if unknown."""
    if configured is not None:
        return (float(configured[0]), float(configured[1])), "JudgeConfig.price_per_1k"
    if model in LIST_PRICES_PER_1K:
        return LIST_PRICES_PER_1K[model], LIST_PRICE_NOTE
    return None, None


class Usage:
    """Thread-safe counters of one Judge (this process only)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n = dict.fromkeys(COUNTERS, 0)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, value in deltas.items():
                self._n[name] += int(value)

    def snapshot(self, model: str, price: Optional[tuple[float, float]]) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = dict(self._n)
        per_1k, source = price_for(model, price)
        cost = saved = None
        if per_1k is not None:
            cost = round((out["prompt_tokens"] * per_1k[0] + out["completion_tokens"] * per_1k[1]) / 1000, 6)
            saved = round((out["cached_prompt_tokens"] * per_1k[0]
                           + out["cached_completion_tokens"] * per_1k[1]) / 1000, 6)
        out.update({"price_per_1k_usd": list(per_1k) if per_1k else None, "price_source": source,
                    "estimated_cost_usd": cost, "estimated_cost_saved_by_cache_usd": saved,
                    "scope": "this process"})
        return out
