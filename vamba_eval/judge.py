"""The LLM judge client (G-VEval, MLVU generation tasks): the ONLY module that imports ``openai``.

    judge = build_judge(run_config)          # None when no judge is configured
    reply = judge.chat(messages, temperature=1, logprobs=True, top_logprobs=5)
    reply.text, reply.tokens[i].token, reply.tokens[i].top   # plain data, no SDK objects

Any OpenAI-compatible server works (``judge_base_url``: OpenAI, Azure-compatible proxies, vLLM,
SGLang …). The API key is read from the environment variable named by ``api_key_env`` when the
client is first needed; it is never logged, never put in a record, a message or ``describe()``,
and it is not pickled (a Ray actor re-reads it from its own environment).

Failures: transport errors, timeouts, HTTP 408/409/429 and 5xx, and malformed 200 replies (body
not JSON, no ``choices[0].message``) are retried with exponential backoff — or after the server's
``Retry-After`` (capped at ``max_retry_after_s``) — up to ``max_retries`` times; then, and at once for
other HTTP errors (400, 401 …), ``JudgeUnavailable`` is raised (``JudgeReplyMalformed`` when the last
reply was malformed), which a run records as the sample's error (never a score).

Cache, concurrency, usage (``vamba_eval.judge_cache``): every successful reply is stored on disk
under a sha256 of the full request (+ ``sample_index``; ``JudgeConfig.cache``, ``--no-judge-cache``),
so re-scoring replays it without an HTTP request; at most ``max_concurrency`` requests per endpoint
are in flight per process; ``Judge.usage()`` counts requests, cache hits, tokens and an estimated
cost, and ``record_judge_usage`` writes it into a run's config.json (``model.judge.usage``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence
from urllib.parse import urlsplit, urlunsplit

from vamba_eval.judge_cache import JudgeCache, Usage, describe_request, limiter, request_key, retry_after_s
from vamba_eval.run.config import ConfigFileError
from vamba_eval.run.process import JudgeUnavailable

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = frozenset({408, 409, 429})
_KEY_LIKE = re.compile(r"sk-[A-Za-z0-9_\-*.]{4,}")
REDACTED = "[redacted]"


class JudgeConfigError(ConfigFileError):
    """The judge settings are incomplete (no model, no API key in the environment …)."""


class _BadReply(Exception):
    """A 200 reply without the expected structure (retried like a transport error)."""


class JudgeReplyUnusable(JudgeUnavailable):
    """The judge answered, but never in a form the metric can score (after the metric's retries)."""


class JudgeReplyMalformed(JudgeUnavailable):
    """The server answered HTTP 200 with a body that is not a chat completion (after the retries)."""


@dataclass(frozen=True)
class JudgeConfig:
    """How to reach the judge. ``None`` sampling values are left to the caller / the server."""

    model: str
    base_url: Optional[str] = None  # None: the OpenAI API
    api_key_env: str = "OPENAI_API_KEY"
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    max_tokens: Optional[int] = None
    timeout_s: float = 120.0
    max_retries: int = 3
    backoff_s: float = 1.0  # first retry waits this long, then ×2 each time (capped at 60 s)
    prompts_dir: Optional[str] = None  # folder with the benchmark authors' prompt files
    cache: bool = True  # replay stored replies of identical requests (see vamba_eval.judge_cache)
    cache_dir: Optional[str] = None  # None: $VAMBA_EVAL_CACHE/judge (~/.cache/vamba-eval/judge)
    max_concurrency: int = 4  # requests in flight per endpoint and process
    max_retry_after_s: float = 60.0  # a server's Retry-After is honoured up to this many seconds
    price_per_1k: Optional[tuple[float, float]] = None  # USD per 1k prompt/completion tokens; None: list price


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token, its log-probability and its top alternatives ``(token, logprob)``."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class JudgeReply:
    """The judge's answer as plain data (no SDK objects, nothing secret)."""

    text: str
    tokens: tuple[TokenLogprob, ...] = ()
    model: str = ""
    finish_reason: Optional[str] = None
    usage: Mapping[str, int] = field(default_factory=dict)
    api_attempts: int = 1  # HTTP requests this reply took (0: replayed from the cache)
    cached: bool = False

    def to_record(self) -> dict[str, Any]:
        """Small JSON-safe summary for sample records (the token list is left out)."""
        return {"text": scrub(self.text), "model": self.model, "finish_reason": self.finish_reason,
                "usage": dict(self.usage), "n_generated": len(self.tokens), "api_attempts": self.api_attempts,
                "cached": self.cached}

    def to_cache(self) -> dict[str, Any]:
        """Everything the metrics read (tokens and their alternatives included), JSON-safe."""
        return {"text": self.text, "model": self.model, "finish_reason": self.finish_reason, "usage": dict(self.usage),
                "tokens": [[t.token, t.logprob, [list(alt) for alt in t.top]] for t in self.tokens]}

    @classmethod
    def from_cache(cls, data: Mapping[str, Any]) -> "JudgeReply":
        tokens = tuple(TokenLogprob(str(tok), float(lp), tuple((str(a), float(b)) for a, b in top))
                       for tok, lp, top in data.get("tokens", []))
        return cls(text=str(data["text"]), tokens=tokens, model=str(data.get("model", "")),
                   finish_reason=data.get("finish_reason"), usage={k: int(v) for k, v in data.get("usage", {}).items()},
                   api_attempts=0, cached=True)


def scrub(text: str, secret: Optional[str] = None) -> str:
    """``text`` without ``secret`` and without anything that looks like an OpenAI key."""
    if secret:
        text = text.replace(secret, REDACTED)
    return _KEY_LIKE.sub(REDACTED, text)


def without_secret(reply: JudgeReply, secret: Optional[str]) -> JudgeReply:
    """``reply`` with ``secret`` cut out of its text and out of every token overlapping it (a server
    or proxy that echoes the key must not put it into records, caches or reports)."""
    joined = "".join(t.token for t in reply.tokens)
    if not secret or (secret not in reply.text and secret not in joined):
        return reply
    spans = [(m.start(), m.start() + len(secret)) for m in re.finditer(re.escape(secret), joined)]
    tokens, pos = [], 0
    for tok in reply.tokens:
        end = pos + len(tok.token)
        hit = secret in tok.token or any(a < end and pos < b for a, b in spans)
        tokens.append(TokenLogprob(REDACTED, tok.logprob, ()) if hit else tok)
        pos = end
    return dataclasses.replace(reply, text=scrub(reply.text, secret), tokens=tuple(tokens))


def safe_url(url: Optional[str]) -> str:
    """The base URL without user info, query or fragment (those may carry credentials)."""
    if not url:
        return DEFAULT_BASE_URL
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _openai() -> Any:
    try:
        import openai
    except ImportError as err:  # pragma: no cover - openai is a declared dependency
        raise JudgeUnavailable("the LLM judge needs the openai package: pip install openai") from err
    return openai


class Judge:
    """A chat-completions client with retries, a reply cache, a concurrency limit and usage
    counters; ``options`` carries run-config task settings (e.g. ``gveval_mode``) to the tasks."""

    def __init__(self, config: JudgeConfig, options: Optional[Mapping[str, Any]] = None) -> None:
        self.config = config
        self.options: dict[str, Any] = dict(options or {})
        self._client: Any = None
        self._lock = threading.Lock()
        self._usage = Usage()
        self._limit = limiter(safe_url(config.base_url), config.max_concurrency)

    # -- pickling (Ray actors): never ship the client, which holds the key
    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"], state["options"])

    def describe(self) -> dict[str, Any]:
        """What to record about the judge: never the key (only the NAME of its variable)."""
        c = self.config
        return {"model": c.model, "base_url": safe_url(c.base_url), "api_key_env": c.api_key_env,
                "temperature": c.temperature, "top_p": c.top_p, "max_tokens": c.max_tokens,
                "max_retries": c.max_retries, "timeout_s": c.timeout_s, "max_concurrency": c.max_concurrency,
                "cache": c.cache,
                "prompts": c.prompts_dir or "built-in paraphrases (vamba-eval; not the benchmark authors' text)",
                "options": dict(self.options)}

    def usage(self) -> dict[str, Any]:
        """This Judge's counters in this process (``calls``, HTTP ``requests``, ``cache_hits``,
        ``failures``, tokens billed / replayed …) and the estimated USD cost (None: no price known)."""
        return self._usage.snapshot(self.config.model, self.config.price_per_1k)

    def cache_folder(self) -> Optional[Path]:
        """Where replies are stored, or None when the cache is off."""
        if not self.config.cache:
            return None
        if self.config.cache_dir:
            return Path(self.config.cache_dir).expanduser()
        from vamba_eval.run.plan import cache_root

        return cache_root() / "judge"

    def _key(self) -> str:
        key = os.environ.get(self.config.api_key_env)
        if not key:
            raise JudgeUnavailable(missing_key_message(self.config.api_key_env))
        return key

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = _openai().OpenAI(base_url=self.config.base_url or None, api_key=self._key(),
                                                timeout=self.config.timeout_s, max_retries=0)
            return self._client

    def chat(self, messages: Sequence[Mapping[str, Any]], *, temperature: Optional[float] = None,
             top_p: Optional[float] = None, logprobs: bool = False, top_logprobs: Optional[int] = None,
             max_tokens: Optional[int] = None, sample_index: int = 0) -> JudgeReply:
        """One chat completion; arguments left None fall back to the config, then to the server.

        ``sample_index`` is not sent: it is part of the cache key only, so that a deliberate
        re-sample of the same request (a metric's retry) is asked anew instead of replayed."""
        params = self._params(messages, temperature, top_p, logprobs, top_logprobs, max_tokens)
        self._usage.add(calls=1)
        folder = self.cache_folder()
        cache = JudgeCache(folder) if folder is not None else None
        key = request_key(params, self.config.base_url or DEFAULT_BASE_URL, sample_index) if cache else ""
        secret = os.environ.get(self.config.api_key_env)
        replayed = self._replay(cache, key) if cache else None
        if replayed is not None:
            return without_secret(replayed, secret)
        try:
            reply = self._ask(params)
        except JudgeUnavailable:
            self._usage.add(failures=1)
            raise
        self._usage.add(replies=1, prompt_tokens=reply.usage.get("prompt_tokens", 0),
                        completion_tokens=reply.usage.get("completion_tokens", 0))
        if cache is not None:  # a reply that echoes the key is not stored at all (JudgeCache.put)
            self._store(cache, key, params, sample_index, reply)
        return without_secret(reply, secret)  # … and reaches records and reports without it

    def _replay(self, cache: JudgeCache, key: str) -> Optional[JudgeReply]:
        try:
            reply = JudgeReply.from_cache(cache.get(key) or {})
        except (KeyError, TypeError, ValueError):
            return None  # a miss, or a damaged entry: ask again (and overwrite it)
        self._usage.add(cache_hits=1, cached_prompt_tokens=reply.usage.get("prompt_tokens", 0),
                        cached_completion_tokens=reply.usage.get("completion_tokens", 0))
        return reply

    def _store(self, cache: JudgeCache, key: str, params: Mapping[str, Any], sample_index: int,
               reply: JudgeReply) -> None:
        request = describe_request(params, safe_url(self.config.base_url), sample_index)
        try:
            written = cache.put(key, reply.to_cache(), request, os.environ.get(self.config.api_key_env))
        except OSError:  # a read-only or full disk must not cost the reply
            written = False
        self._usage.add(**({"cache_writes": 1} if written else {"cache_skipped": 1}))

    def _ask(self, params: Mapping[str, Any]) -> JudgeReply:
        """The HTTP request with the retry policy (see the module docstring)."""
        client = self._get_client()
        openai = _openai()
        problem, malformed, wait = "", False, 0.0
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                time.sleep(wait)
            wait = min(60.0, self.config.backoff_s * 2 ** attempt)  # the next wait unless the server says
            malformed = False
            try:
                with self._limit:
                    self._usage.add(requests=1)
                    response = client.chat.completions.create(**params)
                return _reply(response, attempt + 1)
            except openai.APIStatusError as err:
                problem = f"HTTP {err.status_code}: {_message(err)}"
                if err.status_code == 429:
                    self._usage.add(rate_limited=1)
                if err.status_code not in RETRY_STATUS and err.status_code < 500:
                    raise JudgeUnavailable(self._fail(problem, attempt + 1, "the request was refused")) from None
                told = retry_after_s(getattr(getattr(err, "response", None), "headers", None),
                                     self.config.max_retry_after_s)
                wait = told if told is not None else wait
            except (openai.APIConnectionError, openai.APIResponseValidationError) as err:
                problem = f"{type(err).__name__}: {_message(err)}"
            except _BadReply as err:
                problem, malformed = f"malformed reply: {err}", True
            except ValueError as err:  # the SDK's json.loads of a 200 body (JSONDecodeError)
                problem = f"malformed reply: the HTTP 200 body is not JSON ({type(err).__name__}: {_message(err)})"
                malformed = True
        error = JudgeReplyMalformed if malformed else JudgeUnavailable
        raise error(self._fail(problem, self.config.max_retries + 1, "no usable answer"))

    def _params(self, messages: Sequence[Mapping[str, Any]], temperature: Optional[float],
                top_p: Optional[float], logprobs: bool, top_logprobs: Optional[int],
                max_tokens: Optional[int]) -> dict[str, Any]:
        c = self.config
        params: dict[str, Any] = {"model": c.model, "messages": list(messages)}
        for name, value in (("temperature", temperature if temperature is not None else c.temperature),
                            ("top_p", top_p if top_p is not None else c.top_p),
                            ("max_tokens", max_tokens if max_tokens is not None else c.max_tokens)):
            if value is not None:
                params[name] = value
        if logprobs:
            params["logprobs"] = True
            if top_logprobs is not None:
                params["top_logprobs"] = int(top_logprobs)
        return params

    def _fail(self, problem: str, attempts: int, what: str) -> str:
        text = (f"judge {self.config.model} at {safe_url(self.config.base_url)}: {what} after {attempts} "
                f"attempt{'s' if attempts != 1 else ''} ({problem}). Check the server, the model name and "
                f"${self.config.api_key_env}.")
        return scrub(text, os.environ.get(self.config.api_key_env))


def _message(err: BaseException) -> str:
    body = getattr(err, "body", None)
    inner = body.get("error", body) if isinstance(body, dict) else None
    text = (inner.get("message") if isinstance(inner, dict) else None) or getattr(err, "message", None) or str(err)
    return " ".join(str(text).split())[:300]


def _tokens(choice: Any) -> tuple[TokenLogprob, ...]:
    content = getattr(getattr(choice, "logprobs", None), "content", None) or []
    out = []
    for item in content:
        top = tuple((str(t.token), float(t.logprob)) for t in (getattr(item, "top_logprobs", None) or []))
        out.append(TokenLogprob(str(item.token), float(item.logprob), top))
    return tuple(out)


def _reply(response: Any, attempts: int) -> JudgeReply:
    """The SDK object as plain data; anything that is not a chat completion is ``_BadReply``."""
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list) or not choices or getattr(choices[0], "message", None) is None:
        raise _BadReply(f"the HTTP 200 body is not a chat completion (no choices[0].message; got "
                        f"{type(response).__name__} {str(response)[:80]!r})")
    choice = choices[0]
    if not isinstance(content := choice.message.content, (str, type(None))):
        raise _BadReply(f"choices[0].message.content is {type(content).__name__}, not text")
    try:
        tokens = _tokens(choice)
        usage = getattr(response, "usage", None)
        counts = {k: int(getattr(usage, k)) for k in ("prompt_tokens", "completion_tokens")
                  if usage is not None and getattr(usage, k, None) is not None}
    except (AttributeError, TypeError, ValueError) as err:
        raise _BadReply(f"unreadable logprobs/usage ({type(err).__name__}: {err})") from None
    return JudgeReply(text=content or "", tokens=tokens, model=str(getattr(response, "model", None) or ""),
                      finish_reason=choice.finish_reason, usage=counts, api_attempts=attempts)


def missing_key_message(env: str) -> str:
    return (f"the LLM judge needs an API key in the environment variable ${env} (not set). Export it "
            f"(a local server without auth accepts any value, e.g. {env}=EMPTY), or name another "
            "variable with --judge-api-key-env.")


def make_judge(model: Optional[str], base_url: Optional[str] = None, *, api_key_env: str = "OPENAI_API_KEY",
               prompts_dir: Optional[str] = None, options: Optional[Mapping[str, Any]] = None,
               **settings: Any) -> Judge:
    """A judge from explicit settings; checks the model name, the prompt folder and the key now.
    ``settings`` are further ``JudgeConfig`` fields (``cache=False``, ``max_concurrency`` …)."""
    if not model:
        raise JudgeConfigError("--judge-model is required with --judge-base-url (e.g. gpt-4o-2024-05-13)")
    if prompts_dir is not None and not os.path.isdir(os.path.expanduser(prompts_dir)):
        raise JudgeConfigError(f"--judge-prompts {prompts_dir}: not a folder")
    if not os.environ.get(api_key_env):
        raise JudgeConfigError(missing_key_message(api_key_env))
    folder = os.path.expanduser(prompts_dir) if prompts_dir else None
    return Judge(JudgeConfig(model=model, base_url=base_url, api_key_env=api_key_env, prompts_dir=folder,
                             **settings), options)


OPTION_KEYS = ("gveval_mode", "gveval_accr")  # run-config keys handed to the tasks through Judge.options


def build_judge(cfg: Any) -> Optional[Judge]:
    """The run's judge, or None when neither ``judge_model`` nor ``judge_base_url`` is set.
    ``judge_cache`` (default True; ``--no-judge-cache``) turns the reply cache off; the cache
    folder is fixed here so that Ray actors use the driver's."""
    if not cfg.judge_model and not cfg.judge_base_url:
        return None
    options = {k: getattr(cfg, k) for k in OPTION_KEYS if getattr(cfg, k, None) is not None}
    use_cache = bool(getattr(cfg, "judge_cache", True))
    settings: dict[str, Any] = {"cache": use_cache}
    if use_cache:
        from vamba_eval.run.plan import cache_root

        settings["cache_dir"] = str(cache_root() / "judge")
    return make_judge(cfg.judge_model, cfg.judge_base_url, api_key_env=cfg.judge_api_key_env,
                      prompts_dir=cfg.judge_prompts, options=options, **settings)


def record_judge_usage(run_dir: Path, judge: Optional[Judge]) -> Optional[dict[str, Any]]:
    """Write ``judge.usage()`` into ``<run_dir>/config.json`` → ``model.judge.usage`` (this
    process's counters; a resumed run records its last session). Returns what was written."""
    if judge is None:
        return None
    from vamba_eval.run import store

    path = Path(run_dir) / store.CONFIG
    if not path.exists():
        return None
    data = store.read_config(Path(run_dir))
    usage = judge.usage()
    data.setdefault("model", {}).setdefault("judge", {})["usage"] = usage
    store.write_json(path, data)
    return usage
