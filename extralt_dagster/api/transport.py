"""How one request travels: the reused `httpx.Client`, the rate limit, the retry policy, and how
a failure becomes a typed error. The client above it speaks runs and exports; this speaks HTTP.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from .errors import (
    ExtraltAPIError,
    ExtraltAuthError,
    ExtraltConflictError,
    ExtraltConnectError,
    ExtraltConnectionError,
    ExtraltInsufficientCreditsError,
    ExtraltNotFoundError,
    ExtraltRateLimitError,
    ExtraltReadError,
    ExtraltServerError,
    ExtraltValidationError,
)
from .models import is_loopback

API_PREFIX = "/v0/extract"
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# A create that may have reached the server: retrying it blindly could start a second, paid run.
AMBIGUOUS_CREATE_STATUSES = frozenset({500, 502, 504})
# An API answer (not an export) larger than this is refused: a run page is a few hundred KB.
MAX_RESPONSE_BYTES = 64 << 20
# httpx's failures that happen before anything is sent.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

_T = TypeVar("_T")

logger = logging.getLogger("extralt_dagster.client")


class TokenBucket:
    """Client-side rate limit, so a busy process slows itself before the server has to."""

    def __init__(
        self,
        per_minute: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("rate limit needs per_minute > 0 and burst >= 1")
        self.rate = per_minute / 60.0
        self.capacity = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until one is free; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1.0
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        if wait:
            self._sleep(wait)
        return wait


@dataclass(frozen=True)
class RetryPolicy:
    """What is retried, how long to wait between tries, and when to give up."""

    max_retries: int = 5
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    rate_limit_backoff_seconds: float = 15.0
    retry_timeout_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")

    def delay_for(self, exc: Exception, tries: int) -> float:
        """Seconds to wait before try `tries + 1`: the server's Retry-After when it sent one."""
        if isinstance(exc, ExtraltAPIError) and exc.retry_after is not None:
            return exc.retry_after
        if isinstance(exc, ExtraltAPIError) and exc.status_code == 429:
            # Documented: back off at about 15, 30, 60 s; jitter so workers don't stampede.
            base = self.rate_limit_backoff_seconds * (2**tries)
            return min(self.max_backoff_seconds, base) * random.uniform(0.5, 1.0)
        cap = min(self.max_backoff_seconds, self.backoff_seconds * (2**tries))
        return random.uniform(0, cap)  # full jitter


class Transport:
    """One `httpx.Client` for the whole client, every request retried under one `RetryPolicy`."""

    def __init__(
        self,
        http: httpx.Client,
        base_url: str,
        api_key: str,
        policy: RetryPolicy,
        *,
        timeout: float,
        connect_timeout: float,
        bucket: TokenBucket | None,
        sleep: Callable[[float], None],
    ) -> None:
        self.http = http
        self.base_url = base_url
        self.policy = policy
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._api_key = api_key
        self._bucket = bucket
        self._sleep = sleep

    def close(self) -> None:
        self.http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = True,
        deadline: float | None = None,
        retry: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        """One API call, read whole, retried as the policy allows; `deadline` bounds it all.

        `retry=False` sends it once: for a caller that is itself the retry loop (a sensor's next
        tick), so one call is one request."""
        if deadline is not None:
            kwargs.setdefault("timeout", deadline)
        # httpx's read timeout is per read: a body that trickles a byte at a time never trips
        # it. So one attempt, body included, gets the request timeout as a whole.
        limit = self.timeout if deadline is None else min(deadline, self.timeout)

        def attempt() -> httpx.Response:
            ends = time.monotonic() + limit
            with self.http.stream(method, f"{API_PREFIX}{path}", **kwargs) as streamed:
                response = _read_bounded(
                    streamed, ends, f"{method} {API_PREFIX}{path}", self.base_url
                )
            if response.status_code >= 400:
                raise self.error_for(response)
            return response

        return self.with_retries(
            method, path, attempt, idempotent=idempotent, deadline=deadline, retry=retry
        )

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """One unretried streamed call (wrap it in `with_retries`); an error status raises."""
        with self.http.stream(method, f"{API_PREFIX}{path}", **kwargs) as response:
            if response.status_code >= 400:
                response.read()
                raise self.error_for(response)
            yield response

    def with_retries(
        self,
        method: str,
        path: str,
        attempt: Callable[[], _T],
        *,
        idempotent: bool,
        deadline: float | None = None,
        retry: bool = True,
    ) -> _T:
        """Run `attempt` until it succeeds, fails for good, or the retry budget is spent."""
        started = time.monotonic()
        policy = self.policy
        budget_seconds = policy.retry_timeout_seconds if deadline is None else deadline
        tries = 0
        slept = 0.0  # counted as well as the clock, so an injected sleep keeps the bound
        while True:
            if self._bucket is not None:
                self._bucket.acquire()
            try:
                return attempt()
            except (ExtraltAPIError, ExtraltConnectionError, httpx.HTTPError) as raw:
                exc = self._translate(raw, method, path)
                retryable = retry and _is_retryable(exc, idempotent)
                delay = policy.delay_for(exc, tries) if retryable else 0.0
                elapsed = max(time.monotonic() - started, slept)
                if not retryable or tries >= policy.max_retries or elapsed + delay > budget_seconds:
                    if exc is raw:
                        raise
                    raise exc from None
                tries += 1
                logger.warning(
                    "Extralt %s %s%s failed (%s); retry %d/%d in %.2fs",
                    method,
                    API_PREFIX,
                    path,
                    describe(exc),
                    tries,
                    policy.max_retries,
                    delay,
                )
                self._sleep(delay)
                slept += delay

    def error_for(self, response: httpx.Response) -> ExtraltAPIError:
        """The typed error for an error status, its server text scrubbed of the key."""
        code = response.status_code
        error, server_message = _error_body(response)
        # Both come from the server: a hostile or buggy one may echo the key back.
        error = self.scrub(error) if error else error
        server_message = self.scrub(server_message) if server_message else server_message
        request = response.request
        where = f"{request.method} {request.url.path}"
        detail = f"{error}: {server_message}" if server_message else (error or "no details")
        cls, advice = _ERRORS.get(code, (None, ""))
        if cls is None:
            cls = ExtraltServerError if code >= 500 else ExtraltAPIError
        message = f"Extralt {where} returned {code} ({detail})."
        if advice:
            message += f" {advice}"
        return cls(
            message,
            status_code=code,
            error=error,
            server_message=server_message,
            method=request.method,
            path=request.url.path,
            retry_after=_parse_retry_after(response.headers.get("retry-after")),
        )

    def scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key in text else text

    def _translate(self, exc: Exception, method: str, path: str) -> Exception:
        if not isinstance(exc, httpx.HTTPError):
            return exc
        kind = type(exc).__name__
        what, advice = self._what_happened(exc)
        cls = ExtraltConnectError if isinstance(exc, _NEVER_SENT) else ExtraltReadError
        return cls(
            f"Extralt {method} {API_PREFIX}{path}: no complete answer from {self.base_url}: "
            f"{what} ({kind}). {advice}",
            cause_kind=kind,
        )

    def _what_happened(self, exc: httpx.HTTPError) -> tuple[str, str]:
        """What a transport error means, and what to do about it, in words."""
        parts = urlsplit(self.base_url)
        host = parts.hostname or self.base_url
        port = parts.port or (443 if parts.scheme == "https" else 80)
        check = "Check EXTRALT_BASE_URL (or the resource's base_url)"
        causes = _causes(exc)
        if any(isinstance(c, socket.gaierror) for c in causes):
            return (
                f"the host name {host!r} did not resolve (DNS)",
                f"{check} for a typo, and this machine's DNS and network.",
            )
        if any(isinstance(c, ConnectionRefusedError) for c in causes):
            start = (
                "; for the local emulator, start it (`extralt-dagster emulator` or `make dev`)"
                if is_loopback(host)
                else ""
            )
            return (
                f"{host}:{port} refused the connection (nothing is listening there)",
                f"{check}: host and port{start}.",
            )
        if isinstance(exc, httpx.ConnectTimeout):
            return (
                f"no connection to {host}:{port} within {self.connect_timeout:g} s",
                f"{check} and the network: a firewall or proxy may be dropping the connection.",
            )
        if isinstance(exc, httpx.TimeoutException):
            return (
                f"no answer within request_timeout_seconds ({self.timeout:g} s)",
                "Check the network, or raise request_timeout_seconds if the API is slow.",
            )
        if isinstance(exc, httpx.ConnectError):
            return (
                f"could not connect ({self.scrub(str(exc))[:200]})",
                f"{check} and the network.",
            )
        return (
            "the connection broke off mid-answer",
            f"Check the network and {check.removeprefix('Check ')}.",
        )


_ERRORS: dict[int, tuple[type[ExtraltAPIError] | None, str]] = {
    400: (ExtraltValidationError, "The request was malformed; this is not retried."),
    401: (ExtraltAuthError, "Check EXTRALT_API_KEY: the key is missing or invalid."),
    402: (
        ExtraltInsufficientCreditsError,
        "The account is out of credits; top up on the Extralt dashboard. Not retried.",
    ),
    403: (ExtraltAuthError, "Check EXTRALT_API_KEY: this key has no access to that resource."),
    404: (ExtraltNotFoundError, "Check the robot or run id."),
    409: (ExtraltConflictError, "The resource is not in a state that allows this."),
    422: (ExtraltValidationError, "Fix the value the server names; this is not retried."),
    429: (ExtraltRateLimitError, "Rate limited past every retry; lower concurrency or poll less."),
}


def _read_bounded(
    response: httpx.Response, ends: float, where: str, base_url: str
) -> httpx.Response:
    """Read a streamed API answer whole, by `ends` (monotonic) and within MAX_RESPONSE_BYTES."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise ExtraltAPIError(
                f"Extralt {where} answered with more than {MAX_RESPONSE_BYTES:,} bytes; "
                "refusing to read further.",
                status_code=response.status_code,
            )
        chunks.append(chunk)
        if time.monotonic() > ends:
            raise ExtraltReadError(
                f"Extralt {where}: no complete answer from {base_url} within the request "
                f"timeout (the body was still arriving after {size:,} bytes). Check the network, "
                "or raise request_timeout_seconds if the API is slow.",
                cause_kind="ReadTimeout",
            )
    # Decoded already: drop the headers that describe the encoded body.
    headers = [
        (k, v)
        for k, v in response.headers.multi_items()
        if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=b"".join(chunks),
        request=response.request,
        extensions=response.extensions,
    )


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it was raised from (httpx wraps httpcore, which wraps the OS)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _is_retryable(exc: Exception, idempotent: bool) -> bool:
    if isinstance(exc, ExtraltConnectionError):
        return idempotent or not maybe_reached_server(exc)
    if isinstance(exc, ExtraltAPIError) and exc.status_code in RETRYABLE_STATUSES:
        return idempotent or exc.status_code not in AMBIGUOUS_CREATE_STATUSES
    return False


def maybe_reached_server(exc: Exception) -> bool:
    """True when a non-idempotent request may have been processed despite the error."""
    if isinstance(exc, ExtraltConnectionError):
        return not isinstance(exc, ExtraltConnectError)
    return isinstance(exc, ExtraltAPIError) and exc.status_code in AMBIGUOUS_CREATE_STATUSES


def describe(exc: Exception) -> str:
    """A failure in a word or two, for log lines: `HTTP 502`, `ReadTimeout`."""
    if isinstance(exc, ExtraltAPIError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, ExtraltConnectionError):
        return exc.cause_kind
    return type(exc).__name__


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError, IndexError):
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return None


def _error_body(response: httpx.Response) -> tuple[str | None, str | None]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = response.text.strip()[:200] if response.content else ""
        return response.reason_phrase or None, text or None
    if not isinstance(body, dict):
        return response.reason_phrase or None, None
    error = body.get("error")
    message = body.get("message")
    return (
        str(error)[:200] if error is not None else response.reason_phrase or None,
        str(message)[:500] if message is not None else None,
    )


def json_body(response: httpx.Response) -> Any:
    """The answer's JSON; a body that is not JSON is an API error naming the request."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        request = response.request
        raise ExtraltAPIError(
            f"Extralt {request.method} {request.url.path} returned {response.status_code} "
            "with a body that is not JSON.",
            status_code=response.status_code,
        ) from None
