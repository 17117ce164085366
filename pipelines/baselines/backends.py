"""Chat back ends for baselines, one registry entry each: `openai` (any OpenAI-compatible
/v1/chat/completions endpoint) and `local` (a Hugging Face chat model run in-process).

A back end turns ChatRequests into Completions in input order and never raises for one bad
example: a response it cannot read is `malformed`, one it could not get is `failed`, and both
give an empty output that scores as a failed parse. Only a configuration error that would fail
every request (a rejected API key, an unknown model or URL) stops the run (BackendFatalError).
"""
from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

from pipelines.baselines.cache import ResponseCache, cache_key
from pipelines.redaction import redact_secret, redact_url
from pipelines.registry import Registry

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 429})  # plus every 5xx
TRANSIENT_ERRORS = (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError)
FATAL_STATUS = {401: "the API key was rejected", 403: "access is forbidden",
                404: "the URL or model does not exist"}


class BackendFatalError(RuntimeError):
    """A failure every request would share (bad key, wrong URL or model): the run stops."""


@dataclass(frozen=True)
class ChatRequest:
    """One example's chat messages and its generation budget in tokens.

    `task` and `task_input` (the example's raw input, e.g. the report) are for back ends that
    answer without a prompt (pipelines.baselines.rules); chat back ends ignore them.
    """

    messages: tuple[dict[str, str], ...]
    max_tokens: int
    task: str = ""
    task_input: str = ""


@dataclass
class Completion:
    """A response: `status` is ok, cached, malformed (unreadable reply) or failed (no reply)."""

    text: str = ""
    status: str = "ok"
    error: str = ""
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class BackendStats:
    """Counters of a back end (logged as baseline/... metrics): requests is HTTP attempts for
    `openai`, examples generated for `local`."""

    requests: int = 0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class Backend(Protocol):
    """What the baseline runner needs from a back end."""

    name: str
    model: str
    identity: str  # what, besides the model, makes a response differ (for the cache key)
    stats: BackendStats

    def complete(self, requests: list[ChatRequest],
                 on_done: Callable[[int, Completion], None] | None = None) -> list[Completion]: ...


# ---------------------------------------------------------------- OpenAI-compatible HTTP


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) in seconds; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIChatBackend:
    """POSTs to `<base_url>/chat/completions` from a thread pool of `concurrency` workers.

    Retries 408/409/429/5xx and timeouts/connection errors up to `max_retries` times, waiting
    Retry-After when the server sends one, else backoff_s x 2^(attempt-1) (capped, with jitter).
    """

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: str = "", *, concurrency: int = 4,
                 max_retries: int = 5, timeout_s: float = 60.0, backoff_s: float = 1.0,
                 max_backoff_s: float = 60.0, temperature: float = 0.0) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.shown_url = redact_url(self.url)  # for messages: no password
        self.model, self.api_key = model, api_key
        self.concurrency, self.max_retries, self.timeout_s = concurrency, max_retries, timeout_s
        self.backoff_s, self.max_backoff_s, self.temperature = backoff_s, max_backoff_s, temperature
        self.identity = f"openai@{redact_url(base_url.rstrip('/'))}"
        self.stats = BackendStats()
        self._abort = threading.Event()
        self._local = threading.local()

    def complete(self, requests: list[ChatRequest],
                 on_done: Callable[[int, Completion], None] | None = None) -> list[Completion]:
        results: list[Completion | None] = [None] * len(requests)
        self._abort.clear()
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="chat")
        try:
            futures = {pool.submit(self._guarded, r): i for i, r in enumerate(requests)}
            for future in as_completed(futures):
                index = futures[future]
                results[index] = future.result()  # a BackendFatalError propagates from here
                if on_done:
                    on_done(index, results[index])
        except BaseException:
            self._abort.set()  # in-flight workers stop retrying
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return [r if r is not None else Completion(status="failed", error="not sent") for r in results]

    def _session(self):
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def _guarded(self, request: ChatRequest) -> Completion:
        """_one, with any surprise other than a fatal error turned into this example's failure."""
        try:
            return self._one(request)
        except BackendFatalError:
            raise
        except Exception as exc:
            return Completion(status="failed", error=self._redact(f"{exc.__class__.__name__}: {exc}"))

    def _redact(self, text: str) -> str:
        """Error text without the API key or the URL's password (a server may echo either back)."""
        return redact_secret(text.replace(self.url, self.shown_url), self.api_key)

    def _one(self, request: ChatRequest) -> Completion:
        body = {"model": self.model, "messages": list(request.messages), "temperature": self.temperature,
                "max_tokens": request.max_tokens}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        error, attempt = "", 0
        for attempt in range(1, self.max_retries + 2):
            if self._abort.is_set():
                return Completion(status="failed", error="aborted", attempts=attempt - 1)
            self.stats.add(requests=1)
            try:
                response = self._session().post(self.url, json=body, headers=headers, timeout=self.timeout_s)
            except TRANSIENT_ERRORS as exc:
                error, wait = exc.__class__.__name__, None
            else:
                code = response.status_code
                if code == 200:
                    return self._read(response, attempt)
                if code in FATAL_STATUS:
                    raise BackendFatalError(self._redact(
                        f"{self.url} answered HTTP {code}: {FATAL_STATUS[code]} "
                        f"(model {self.model!r}): {response.text[:300]}"))
                if code not in RETRY_STATUS and code < 500:
                    return Completion(status="failed", error=self._redact(f"HTTP {code}: {response.text[:200]}"),
                                      attempts=attempt)
                error, wait = f"HTTP {code}", retry_after_seconds(response.headers.get("Retry-After"))
            if attempt > self.max_retries:
                break
            self.stats.add(retries=1)
            if wait is None:  # exponential backoff; jitter keeps parallel workers from retrying in step
                wait = self.backoff_s * 2 ** (attempt - 1) * random.uniform(1.0, 1.25)
            log.debug("retrying after %s in %.2f s (attempt %d)", error, wait, attempt)
            self._abort.wait(min(wait, self.max_backoff_s))
        return Completion(status="failed", error=f"{error} after {attempt} attempts", attempts=attempt)

    def _read(self, response, attempt: int) -> Completion:
        """The first choice's message content, or a `malformed` completion."""
        try:
            data = response.json()
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return Completion(status="malformed", attempts=attempt,
                              error=self._redact(f"{exc.__class__.__name__}: {response.text[:200]}"))
        if not isinstance(content, str):
            return Completion(status="malformed", error=f"content is {type(content).__name__}",
                              attempts=attempt)
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return Completion(content, "ok", attempts=attempt, prompt_tokens=_count(usage, "prompt_tokens"),
                          completion_tokens=_count(usage, "completion_tokens"))


def _count(usage: dict, name: str) -> int:
    """A token count from the `usage` object; 0 when absent or not a number."""
    value = usage.get(name)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


# ---------------------------------------------------------------- local HF chat model


def render_chat(tokenizer, messages: tuple[dict[str, str], ...]) -> str:
    """The model's own chat format when its tokenizer has a template; else the plain message text.

    Without a template (a base model) the messages are joined by blank lines, ending in one.
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


class LocalChatBackend:
    """A causal LM loaded in-process; batched greedy generation (pipelines.infer.generation)."""

    name = "local"

    def __init__(self, model: str, *, device: str = "auto", precision: str = "auto", batch_size: int = 16,
                 max_prompt_tokens: int = 2048) -> None:
        from pipelines.models import (
            load_model_and_tokenizer,
            resolve_device,
            resolve_model,
            resolve_precision,
        )

        resolved = resolve_model(model)
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model = model
        self.identity = f"local:{self.precision}"
        self.batch_size, self.max_prompt_tokens = batch_size, max_prompt_tokens
        self.lm, self.tokenizer = load_model_and_tokenizer(resolved.path, self.precision, self.device)
        self.stats = BackendStats()

    def complete(self, requests: list[ChatRequest],
                 on_done: Callable[[int, Completion], None] | None = None) -> list[Completion]:
        from pipelines.infer.generation import generate

        results: list[Completion] = [Completion()] * len(requests)
        budgets = sorted({r.max_tokens for r in requests})
        for budget in budgets:  # one generate() call per token budget (i.e. per task)
            rows = [i for i, r in enumerate(requests) if r.max_tokens == budget]
            prompts = [render_chat(self.tokenizer, requests[i].messages) for i in rows]
            outputs = generate(self.lm, self.tokenizer, prompts, max_new_tokens=budget,
                               batch_size=self.batch_size, max_prompt_tokens=self.max_prompt_tokens,
                               desc=f"{self.model} chat")
            self.stats.add(requests=len(rows))
            for i, text in zip(rows, outputs, strict=True):
                results[i] = Completion(text, "ok", attempts=1)
                if on_done:
                    on_done(i, results[i])
        return results


# ---------------------------------------------------------------- registry and the cached runner

class BackendSettings(Protocol):
    """What a back-end factory reads: the fields of pipelines.baselines.config.BaselineConfig (which
    validates its back end against this registry, so this module cannot import it)."""

    backend: str
    model: str
    data: str
    split_seed: int
    tasks: tuple[str, ...]
    base_url: str
    api_key_env: str
    concurrency: int
    max_retries: int
    timeout_s: float
    backoff_s: float
    temperature: float
    device: str
    precision: str
    eval_batch_size: int
    max_seq_length: int


BackendFactory = Callable[[BackendSettings], Backend]
BACKENDS: Registry[BackendFactory] = Registry("baseline backend")


@BACKENDS.register("openai")
def _openai(config: BackendSettings) -> Backend:
    # stripped: a key read with $(cat key.txt) ends in a newline, which requests refuses with an
    # error that quotes the whole header (key included) into every failed example's record
    return OpenAIChatBackend(
        config.base_url, config.model, os.environ.get(config.api_key_env, "").strip(),
        concurrency=config.concurrency, max_retries=config.max_retries, timeout_s=config.timeout_s,
        backoff_s=config.backoff_s, temperature=config.temperature,
    )


@BACKENDS.register("local")
def _local(config: BackendSettings) -> Backend:
    return LocalChatBackend(config.model, device=config.device, precision=config.precision,
                            batch_size=config.eval_batch_size, max_prompt_tokens=config.max_seq_length)


def create_backend(config: BackendSettings) -> Backend:
    """The configured back end (an unknown name lists the valid ones)."""
    return BACKENDS.get(config.backend)(config)


def request_params(backend: Backend, request: ChatRequest) -> dict[str, Any]:
    return {"max_tokens": request.max_tokens, "temperature": getattr(backend, "temperature", 0.0)}


def complete_cached(backend: Backend, requests: list[ChatRequest],
                    cache: ResponseCache | None) -> list[Completion]:
    """Answer from the cache what it holds, send the rest, and cache each good answer as it arrives.

    A back end with `cacheable = False` (the rule baselines) bypasses the cache.
    """
    if not getattr(backend, "cacheable", True):
        cache = None
    keys = [cache_key(backend.identity, backend.model, list(r.messages), request_params(backend, r))
            for r in requests]
    results: list[Completion | None] = [None] * len(requests)
    if cache is not None:
        for i, key in enumerate(keys):
            text = cache.get(key)
            if text is not None:
                results[i] = Completion(text, "cached")
    missing = [i for i, r in enumerate(results) if r is None]
    log.info("%s/%s: %d requests, %d from the cache", backend.name, backend.model, len(requests),
             len(requests) - len(missing))

    def store(position: int, completion: Completion) -> None:
        if cache is not None and completion.status == "ok":
            cache.put(keys[missing[position]], backend.identity, backend.model, completion.text)

    if missing:
        answers = backend.complete([requests[i] for i in missing], on_done=store)
        for i, completion in zip(missing, answers, strict=True):
            results[i] = completion
    return [r for r in results if r is not None]
