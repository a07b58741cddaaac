"""Score what the fleet serves: classify, summarise and embed through a running endpoint.

``base_url`` is the gateway or one service (``http://host:8080``, ``http://host:3004``); the
paths are the fleet's OpenAI-style routes ``/v1/classify``, ``/v1/summarize`` and
``/v1/embeddings``. Every request has a timeout. Answers that say "not now" rather than "no"
are retried, a bounded number of times: 429 (rate limited, queue full) and 503 (not ready,
overloaded) after the server's ``Retry-After`` (seconds or an HTTP date) or else exponential
backoff, and connection failures, where the request never reached a server. Anything else, a
4xx about the request or a 5xx, raises :class:`EndpointError` with the server's own message.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

RETRY_STATUSES = frozenset({429, 503})


class EndpointError(RuntimeError):
    """A request the endpoint refused or failed, with the server's error message."""

    def __init__(
        self, message: str, *, url: str, status: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.code = code


class _TryAgain(Exception):
    def __init__(self, error: EndpointError, retry_after: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _error_message(resp: httpx.Response) -> tuple[str, str | None]:
    try:
        err = resp.json()["error"]
        return str(err["message"]), err.get("code")
    except (ValueError, KeyError, TypeError):
        return (resp.text.strip()[:300] or resp.reason_phrase), None


@dataclass
class EndpointClient:
    """One HTTP client for a fleet endpoint; module functions below wrap it for one call."""

    base_url: str
    api_key: str | None = None
    timeout_s: float = 120.0
    connect_timeout_s: float = 10.0
    retries: int = 4
    backoff_s: float = 0.5
    max_retry_wait_s: float = 60.0
    concurrency: int = 4
    transport: httpx.BaseTransport | None = None
    sleep: Callable[[float], None] = time.sleep
    _http: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.retries < 0 or self.concurrency < 1:
            raise ValueError("retries must be >= 0 and concurrency >= 1")
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._http = httpx.Client(
            base_url=self.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s),
            transport=self.transport,
        )
        self._retrying = Retrying(
            retry=retry_if_exception_type((_TryAgain, httpx.ConnectError, httpx.ConnectTimeout)),
            stop=stop_after_attempt(self.retries + 1),
            wait=self._wait,
            sleep=self.sleep,
            reraise=True,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EndpointClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one request --------------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        backoff = self.backoff_s * 2.0 ** (state.attempt_number - 1)
        if isinstance(exc, _TryAgain) and exc.retry_after is not None:
            if exc.retry_after > self.max_retry_wait_s:
                # Waiting less than the server asked would only be refused again.
                raise EndpointError(
                    f"{exc.error} (the server asks to retry after {exc.retry_after:.0f} s, "
                    f"over max_retry_wait_s={self.max_retry_wait_s:.0f})",
                    url=exc.error.url,
                    status=exc.error.status,
                    code=exc.error.code,
                )
            return float(exc.retry_after)
        return min(backoff, self.max_retry_wait_s)

    def _post_once(self, path: str, body: dict[str, Any]) -> Any:
        url = f"{self._http.base_url}{path}"
        try:
            resp = self._http.post(path, json=body)
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise
            raise EndpointError(
                f"POST {url}: no answer within {self.timeout_s:.0f} s ({type(exc).__name__})",
                url=url,
            ) from exc
        if resp.status_code == 200:
            return resp.json()
        message, code = _error_message(resp)
        error = EndpointError(
            f"POST {url} -> {resp.status_code}: {message}",
            url=url,
            status=resp.status_code,
            code=code,
        )
        if resp.status_code in RETRY_STATUSES:
            raise _TryAgain(error, parse_retry_after(resp.headers.get("retry-after")))
        raise error

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``body`` as JSON, retried as the module docstring says; the decoded answer."""
        try:
            # a copy per call: one client serves several threads
            return self._retrying.copy()(self._post_once, path, body)
        except _TryAgain as exc:
            raise EndpointError(
                f"{exc.error} (gave up after {self.retries + 1} attempts)",
                url=exc.error.url,
                status=exc.error.status,
                code=exc.error.code,
            ) from None
        except httpx.TransportError as exc:
            url = f"{self._http.base_url}{path}"
            raise EndpointError(
                f"POST {url}: cannot connect after {self.retries + 1} attempts ({exc})", url=url
            ) from exc

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        if self.concurrency == 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(fn, items))

    # -- the routes ---------------------------------------------------------------------

    def classify_ranked(
        self,
        texts: Sequence[str],
        *,
        task: str | None = None,
        labels: Sequence[str] | dict[str, str] | None = None,
        batch_size: int = 32,
        model: str | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Every label with its score for each text, best first."""
        _check_texts(texts)
        if (task is None) == (labels is None):
            raise ValueError("give exactly one of task= (a built-in task) or labels=")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        extra: dict[str, Any] = {"task": task} if task is not None else {}
        if labels is not None:
            extra["labels"] = dict(labels) if isinstance(labels, dict) else list(labels)
        if model is not None:
            extra["model"] = model

        def one(batch: list[str]) -> list[list[tuple[str, float]]]:
            data = self.post("/v1/classify", {"input": batch, **extra})["data"]
            ranked = {
                int(item["index"]): sorted(
                    ((x["label"], float(x["score"])) for x in item["labels"]),
                    key=lambda p: -p[1],
                )
                for item in data
            }
            if sorted(ranked) != list(range(len(batch))):
                raise EndpointError(
                    f"the answer covers inputs {sorted(ranked)}, not 0..{len(batch) - 1}",
                    url=f"{self._http.base_url}/v1/classify",
                )
            return [ranked[i] for i in range(len(batch))]

        batches = [list(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        return [r for part in self._map(one, batches) for r in part]

    def classify(self, texts: Sequence[str], **kw: Any) -> list[str]:
        """The top label of each text (``classify_ranked``'s arguments)."""
        return [r[0][0] for r in self.classify_ranked(texts, **kw)]

    def summarize(
        self,
        texts: Sequence[str],
        *,
        max_tokens: int | None = None,
        style: str = "paragraph",
        temperature: float = 0.0,
        seed: int | None = None,
        model: str | None = None,
    ) -> list[str]:
        """One summary per text; ``concurrency`` requests in flight (the server batches them)."""
        _check_texts(texts)
        base: dict[str, Any] = {"style": style, "temperature": temperature}
        for key, value in (("max_tokens", max_tokens), ("seed", seed), ("model", model)):
            if value is not None:
                base[key] = value
        return self._map(
            lambda t: str(self.post("/v1/summarize", {"input": t, **base})["summary"]), texts
        )

    def embed(
        self, texts: Sequence[str], *, batch_size: int = 32, model: str | None = None
    ) -> list[list[float]]:
        """The embedding of each text, in input order."""
        _check_texts(texts)
        extra = {"model": model} if model is not None else {}

        def one(batch: list[str]) -> list[list[float]]:
            data = self.post("/v1/embeddings", {"input": batch, **extra})["data"]
            return [d["embedding"] for d in sorted(data, key=lambda d: d["index"])]

        batches = [list(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        return [e for part in self._map(one, batches) for e in part]


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise TypeError("texts is a sequence of strings, not one string")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ValueError(f"empty or non-string texts at positions {bad[:10]}")


def _client(base_url: str, api_key: str | None, kw: dict[str, Any]) -> EndpointClient:
    opts = {k: kw.pop(k) for k in list(kw) if k in _CLIENT_OPTIONS}
    return EndpointClient(base_url, api_key=api_key, **opts)


_CLIENT_OPTIONS = frozenset(
    {"timeout_s", "connect_timeout_s", "retries", "backoff_s", "max_retry_wait_s", "concurrency"}
)


def classify_endpoint(
    base_url: str,
    texts: Sequence[str],
    *,
    task: str | None = None,
    labels: Sequence[str] | dict[str, str] | None = None,
    api_key: str | None = None,
    batch_size: int = 32,
    **kw: Any,
) -> list[str]:
    """The top label of each text from ``POST {base_url}/v1/classify``.

    Extra keywords: ``model`` and the :class:`EndpointClient` options (``timeout_s``,
    ``retries``, ``max_retry_wait_s``, ``concurrency``, ...).
    """
    with _client(base_url, api_key, kw) as client:
        return client.classify(texts, task=task, labels=labels, batch_size=batch_size, **kw)


def summarize_endpoint(
    base_url: str, texts: Sequence[str], *, api_key: str | None = None, **kw: Any
) -> list[str]:
    """One summary per text from ``POST {base_url}/v1/summarize``.

    Extra keywords: ``max_tokens``, ``style``, ``temperature``, ``seed``, ``model`` and the
    :class:`EndpointClient` options.
    """
    with _client(base_url, api_key, kw) as client:
        return client.summarize(texts, **kw)


def embed_endpoint(
    base_url: str,
    texts: Sequence[str],
    *,
    api_key: str | None = None,
    batch_size: int = 32,
    **kw: Any,
) -> list[list[float]]:
    """Embeddings from ``POST {base_url}/v1/embeddings`` (``base_url`` may end in that path)."""
    suffix = "/v1/embeddings"
    if base_url.rstrip("/").endswith(suffix):
        base_url = base_url.rstrip("/")[: -len(suffix)]
    with _client(base_url, api_key, kw) as client:
        return client.embed(texts, batch_size=batch_size, **kw)


__all__ = [
    "EndpointClient",
    "EndpointError",
    "classify_endpoint",
    "embed_endpoint",
    "parse_retry_after",
    "summarize_endpoint",
]
