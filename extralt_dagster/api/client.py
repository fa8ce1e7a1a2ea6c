"""A plain, typed HTTP client for the Extralt extract API. No Dagster in here."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import random
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from .errors import (
    ExtraltAPIError,
    ExtraltAuthError,
    ExtraltConflictError,
    ExtraltConnectionError,
    ExtraltError,
    ExtraltExportError,
    ExtraltInsufficientCreditsError,
    ExtraltNotFoundError,
    ExtraltRateLimitError,
    ExtraltServerError,
    ExtraltValidationError,
)
from .models import (
    ExportFormat,
    ExtraltRun,
    validate_budget,
    validate_robot_id,
    validate_start_urls,
)

DEFAULT_BASE_URL = "https://api.extralt.com"
API_PREFIX = "/v0/extract"
DEFAULT_DASHBOARD_URL = "https://app.extralt.com/runs/{run_id}"
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# A create that may have reached the server: retrying it blindly could start a second, paid run.
AMBIGUOUS_CREATE_STATUSES = frozenset({500, 502, 504})
CHUNK_SIZE = 1 << 20
# An API answer (not an export) larger than this is refused: a run page is a few hundred KB.
MAX_RESPONSE_BYTES = 64 << 20
_SAFE_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")

_T = TypeVar("_T")

logger = logging.getLogger("extralt_dagster.client")

try:
    __version__ = version("extralt-dagster")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"


def validate_base_url(base_url: str) -> str:
    """The key travels in a header: refuse plain http anywhere but loopback."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ExtraltValidationError(
            f"base_url must be an absolute https:// URL such as {DEFAULT_BASE_URL!r}, got {base_url!r}."
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ExtraltValidationError(
            f"base_url {base_url!r} uses plain http to a remote host, which would send the API key "
            "in clear. Use https:// (plain http is allowed only for 127.0.0.1/localhost)."
        )
    return base_url.rstrip("/")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


class ExtraltClient:
    """One reused `httpx.Client` speaking the Extralt extract API.

    Retries only what is safe to retry (connect/read failures, 429, 500/502/503/504), within
    `max_retries` and `retry_timeout_seconds`. A create that may have reached the server is never
    blindly sent twice: the client first looks for the run it may already have started.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        max_retries: int = 5,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
        rate_limit_backoff_seconds: float = 15.0,
        retry_timeout_seconds: float = 300.0,
        rate_limit_per_minute: float | None = 120,
        rate_limit_burst: int = 30,
        max_export_bytes: int | None = None,
        dashboard_url_template: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise ExtraltAuthError(
                "No Extralt API key given. Set the EXTRALT_API_KEY environment variable "
                "(or pass api_key) to the key from your Extralt dashboard."
            )
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = validate_base_url(base_url)
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.rate_limit_backoff_seconds = rate_limit_backoff_seconds
        self.retry_timeout_seconds = retry_timeout_seconds
        self.max_export_bytes = max_export_bytes
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.dashboard_url_template = dashboard_url_template or (
            DEFAULT_DASHBOARD_URL
            if self.base_url == DEFAULT_BASE_URL
            else f"{self.base_url}/runs/{{run_id}}"
        )
        self._api_key = api_key
        self._sleep = sleep
        self._bucket = (
            TokenBucket(rate_limit_per_minute, rate_limit_burst, sleep=sleep)
            if rate_limit_per_minute
            else None
        )
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={
                "Authorization": f"Bearer {api_key}",
                "User-Agent": f"extralt-dagster/{__version__} httpx/{httpx.__version__}",
                "Accept": "application/json",
            },
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"ExtraltClient(base_url={self.base_url!r}, api_key='***')"

    def __enter__(self) -> ExtraltClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def dashboard_url(self, run_id: str) -> str:
        """Where a person can look at the run (`dashboard_url_template` with `{run_id}`)."""
        return self.dashboard_url_template.format(run_id=run_id)

    # --- Runs ---------------------------------------------------------------------------

    def create_run(
        self,
        robot_id: str,
        start_urls: list[str] | None = None,
        budget: int | None = None,
        auto_enrich: bool = False,
        *,
        exclude_run_ids: Collection[str] = (),
    ) -> str:
        """Start a run and return its id. Costs credits, so it is never sent twice blindly.

        `exclude_run_ids`: runs the caller already knows (earlier materializations of the same
        robot and budget), which the look-up after an ambiguous failure must never adopt.
        """
        body: dict[str, Any] = {"robot_id": validate_robot_id(robot_id)}
        urls = validate_start_urls(start_urls)
        if urls is not None:
            body["start_urls"] = urls
        if validate_budget(budget) is not None:
            body["budget"] = budget
        if not isinstance(auto_enrich, bool):
            raise ExtraltValidationError(f"auto_enrich must be true or false, got {auto_enrich!r}.")
        if auto_enrich:
            body["auto_enrich"] = True

        sent_at = time.time()
        try:
            response = self._request("POST", "/runs", json=body, idempotent=False)
        except (ExtraltConnectionError, ExtraltServerError) as exc:
            if not _maybe_reached_server(exc):
                raise
            try:
                adopted = self.find_started_run(
                    robot_id, budget, urls, since=sent_at, exclude=exclude_run_ids
                )
            except ExtraltError as lookup_exc:
                raise ExtraltAPIError(
                    f"Creating a run for robot {robot_id} failed ambiguously ({_describe(exc)}) and "
                    f"the follow-up look-up failed too ({type(lookup_exc).__name__}). A run may have "
                    "started: check the Extralt dashboard before retrying."
                ) from exc
            if adopted is None:
                # Nothing yet: the create may still land (a slow server), so re-sending it could
                # pay twice. Fail; the caller's next attempt looks again before creating.
                exc.args = (
                    f"{exc} The create request may still start a run; none was found yet, so it "
                    "was not re-sent. A later attempt should call find_started_run() first "
                    "(the Dagster asset does).",
                )
                raise
            logger.warning(
                "Create request for robot %s failed ambiguously (%s); adopting run %s that it "
                "had already started instead of paying for a second run.",
                robot_id,
                _describe(exc),
                adopted,
            )
            return adopted
        return _id_from(response, f"POST {API_PREFIX}/runs")

    def get_run(self, run_id: str) -> ExtraltRun:
        response = self._request("GET", f"/runs/{_run_path(run_id)}")
        return ExtraltRun.from_api(_json(response))

    def stop_run(self, run_id: str, *, timeout: float | None = None) -> None:
        """Ask the API to stop a run. `timeout` bounds the whole call, retries included."""
        self._request("POST", f"/runs/{_run_path(run_id)}/stop", deadline=timeout)

    def restart_run(self, run_id: str, budget: int | None = None) -> str:
        """Restart a stopped, failed or completed run; follow the id the API answers with."""
        validate_budget(budget)
        body = {"budget": budget} if budget is not None else None
        response = self._request(
            "POST", f"/runs/{_run_path(run_id)}/restart", json=body, idempotent=False
        )
        return _id_from(response, f"POST {API_PREFIX}/runs/{run_id}/restart")

    def list_runs(self, *, limit: int | None = None, page_size: int = 100) -> list[ExtraltRun]:
        """Runs, newest first, following `nextCursor` until it is null or `limit` is reached."""
        return list(self.iter_runs(limit=limit, page_size=page_size))

    def iter_runs(self, *, limit: int | None = None, page_size: int = 100) -> Iterator[ExtraltRun]:
        for yielded, doc in enumerate(self._paginate("/runs", {"limit": page_size})):
            if limit is not None and yielded >= limit:
                return
            yield ExtraltRun.from_api(doc)

    def iter_captures(self, run_id: str, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Capture rows one page at a time; use `download_export` for bulk data."""
        yield from self._paginate("/captures", {"run_id": run_id, "limit": page_size})

    # --- Export ---------------------------------------------------------------------------

    def download_export(
        self,
        run_id: str,
        dest: str | os.PathLike[str],
        format: ExportFormat | str = ExportFormat.PARQUET,
    ) -> Path:
        """Stream a run's export to disk and return the path written.

        `dest` is a directory (the file is named after the run) or a file path. Bytes go to a
        temporary file beside the target and are renamed into place only when whole and readable,
        so a cut connection or a corrupt body never leaves a partial file behind.
        """
        fmt = ExportFormat(format)
        target = self._export_target(run_id, Path(dest), fmt)
        target.parent.mkdir(parents=True, exist_ok=True)
        params = {"run_id": run_id, "format": fmt.value}

        def attempt() -> Path:
            fd, tmp_name = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.", suffix=".part"
            )
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as out:
                    self._stream_into(out, params)
                _check_export(tmp, fmt)
                os.replace(tmp, target)
                return target
            finally:
                tmp.unlink(missing_ok=True)

        return self._with_retries("GET", "/captures/export", attempt, idempotent=True)

    def _stream_into(self, out: Any, params: dict[str, str]) -> None:
        with self._http.stream("GET", f"{API_PREFIX}/captures/export", params=params) as response:
            if response.status_code >= 400:
                response.read()
                raise self._error_for(response)
            expected = response.headers.get("content-length")
            written = 0
            for chunk in response.iter_bytes(CHUNK_SIZE):
                written += len(chunk)
                if self.max_export_bytes is not None and written > self.max_export_bytes:
                    raise ExtraltExportError(
                        f"Export for run {params['run_id']} exceeded max_export_bytes "
                        f"({self.max_export_bytes:,} bytes); download aborted. Raise the cap if "
                        "the run is really that large."
                    )
                out.write(chunk)
            if expected is not None and expected.isdigit() and int(expected) != written:
                raise ExtraltConnectionError(
                    f"Export for run {params['run_id']} ended after {written:,} of "
                    f"{int(expected):,} bytes."
                )

    def _export_target(self, run_id: str, dest: Path, fmt: ExportFormat) -> Path:
        # The server's Content-Disposition filename is never trusted as a path: we name the file.
        if dest.is_dir() or str(dest).endswith(os.sep):
            return dest / safe_export_filename(run_id, fmt)
        return dest

    # --- Transport ----------------------------------------------------------------------

    def _paginate(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            query = dict(params, **({"cursor": cursor} if cursor else {}))
            page = _json(self._request("GET", path, params=query))
            if not isinstance(page, dict):
                raise ExtraltAPIError(f"GET {path}: expected a JSON object page")
            rows = page.get("rows", page.get("items"))
            if not isinstance(rows, list):
                raise ExtraltAPIError(f"GET {path}: page has no 'rows' list")
            yield from rows
            cursor = page.get("nextCursor")
            if not cursor:
                return
            if not isinstance(cursor, str):
                raise ExtraltAPIError(f"GET {path}: 'nextCursor' is not a string: {cursor!r:.80}")
            if cursor in seen:
                raise ExtraltAPIError(f"GET {path}: the API repeated cursor {cursor!r}")
            seen.add(cursor)

    def _request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = True,
        deadline: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        if deadline is not None:
            kwargs.setdefault("timeout", deadline)
        # httpx's read timeout is per read: a body that trickles a byte at a time never trips
        # it. So one attempt, body included, gets the request timeout as a whole.
        limit = self.timeout if deadline is None else min(deadline, self.timeout)

        def attempt() -> httpx.Response:
            ends = time.monotonic() + limit
            with self._http.stream(method, f"{API_PREFIX}{path}", **kwargs) as streamed:
                response = _read_bounded(
                    streamed, ends, f"{method} {API_PREFIX}{path}", self.base_url
                )
            if response.status_code >= 400:
                raise self._error_for(response)
            return response

        return self._with_retries(method, path, attempt, idempotent=idempotent, deadline=deadline)

    def _with_retries(
        self,
        method: str,
        path: str,
        attempt: Callable[[], _T],
        *,
        idempotent: bool,
        deadline: float | None = None,
    ) -> _T:
        started = time.monotonic()
        budget_seconds = self.retry_timeout_seconds if deadline is None else deadline
        tries = 0
        slept = 0.0  # counted as well as the clock, so an injected sleep keeps the bound
        while True:
            if self._bucket is not None:
                self._bucket.acquire()
            try:
                return attempt()
            except (ExtraltAPIError, ExtraltConnectionError, httpx.HTTPError) as raw:
                exc = self._translate(raw, method, path)
                retryable = _is_retryable(exc, idempotent)
                delay = self._delay_for(exc, tries) if retryable else 0.0
                elapsed = max(time.monotonic() - started, slept)
                if not retryable or tries >= self.max_retries or elapsed + delay > budget_seconds:
                    if exc is raw:
                        raise
                    raise exc from None
                tries += 1
                logger.warning(
                    "Extralt %s %s%s failed (%s); retry %d/%d in %.2fs",
                    method,
                    API_PREFIX,
                    path,
                    _describe(exc),
                    tries,
                    self.max_retries,
                    delay,
                )
                self._sleep(delay)
                slept += delay

    def _translate(self, exc: Exception, method: str, path: str) -> Exception:
        if not isinstance(exc, httpx.HTTPError):
            return exc
        kind = type(exc).__name__
        what, advice = self._what_happened(exc)
        return ExtraltConnectionError(
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
                f"could not connect ({self._scrub(str(exc))[:200]})",
                f"{check} and the network.",
            )
        return (
            "the connection broke off mid-answer",
            f"Check the network and {check.removeprefix('Check ')}.",
        )

    def _delay_for(self, exc: Exception, tries: int) -> float:
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return retry_after
        if isinstance(exc, ExtraltAPIError) and exc.status_code == 429:
            # Documented: back off at about 15, 30, 60 s; jitter so workers don't stampede.
            base = self.rate_limit_backoff_seconds * (2**tries)
            return min(self.max_backoff_seconds, base) * random.uniform(0.5, 1.0)
        cap = min(self.max_backoff_seconds, self.backoff_seconds * (2**tries))
        return random.uniform(0, cap)  # full jitter

    def _error_for(self, response: httpx.Response) -> ExtraltAPIError:
        code = response.status_code
        error, server_message = _error_body(response)
        # Both come from the server: a hostile or buggy one may echo the key back.
        error = self._scrub(error) if error else error
        server_message = self._scrub(server_message) if server_message else server_message
        request = response.request
        where = f"{request.method} {request.url.path}"
        detail = f"{error}: {server_message}" if server_message else (error or "no details")
        cls, advice = _ERRORS.get(code, (None, ""))
        if cls is None:
            cls = ExtraltServerError if code >= 500 else ExtraltAPIError
        message = f"Extralt {where} returned {code} ({detail})."
        if advice:
            message += f" {advice}"
        exc = cls(
            message,
            status_code=code,
            error=error,
            server_message=server_message,
            method=request.method,
            path=request.url.path,
        )
        exc.retry_after = _parse_retry_after(response.headers.get("retry-after"))  # type: ignore[attr-defined]
        return exc

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key in text else text

    def find_started_run(
        self,
        robot_id: str,
        budget: int | None,
        start_urls: list[str] | None,
        *,
        since: float,
        exclude: Collection[str] = (),
    ) -> str | None:
        """Find the run an ambiguous create may have started (same robot, budget and URLs).

        `since` is the epoch time the create was sent. Runs in `exclude` (ones the caller already
        knows, e.g. an earlier materialization's) are never candidates: the clock-skew allowance
        would otherwise take a run started a minute earlier for the new one. Two or more matches
        raise rather than guess.
        """
        floor_ms = (since - 120) * 1000  # tolerate clock skew between us and the API
        matches = []
        for run in self.iter_runs(limit=50, page_size=50):
            doc = run.raw
            created = doc.get("createdAt")
            if run.robot_id != robot_id or not isinstance(created, int | float):
                continue
            if run.id in exclude:
                continue
            if created < floor_ms or run.budget != budget:
                continue
            if "startUrls" in doc and (doc.get("startUrls") or None) != start_urls:
                continue
            matches.append(run)
        if len(matches) > 1:
            raise ExtraltAPIError(
                f"A create request for robot {robot_id} failed ambiguously and {len(matches)} "
                f"matching runs were started since ({', '.join(r.id for r in matches)}). Refusing "
                "to guess or start another; check the Extralt dashboard."
            )
        return matches[0].id if matches else None


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
            raise ExtraltConnectionError(
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
        return idempotent or not _maybe_reached_server(exc)
    if isinstance(exc, ExtraltAPIError) and exc.status_code in RETRYABLE_STATUSES:
        return idempotent or exc.status_code not in AMBIGUOUS_CREATE_STATUSES
    return False


def _maybe_reached_server(exc: Exception) -> bool:
    """True when a non-idempotent request may have been processed despite the error."""
    if isinstance(exc, ExtraltConnectionError):
        return exc.cause_kind not in (
            "ConnectError",
            "ConnectTimeout",
            "PoolTimeout",
        )
    return isinstance(exc, ExtraltAPIError) and exc.status_code in AMBIGUOUS_CREATE_STATUSES


def _describe(exc: Exception) -> str:
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


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        request = response.request
        raise ExtraltAPIError(
            f"Extralt {request.method} {request.url.path} returned {response.status_code} "
            "with a body that is not JSON.",
            status_code=response.status_code,
        ) from None


def _id_from(response: httpx.Response, what: str) -> str:
    body = _json(response)
    run_id = body.get("id") if isinstance(body, dict) else None
    if not isinstance(run_id, str) or not run_id:
        raise ExtraltAPIError(f"Extralt {what} answered without a run id.")
    return run_id


def _run_path(run_id: str) -> str:
    if not isinstance(run_id, str) or not run_id or "/" in run_id or run_id in (".", ".."):
        raise ExtraltValidationError(
            f"run_id must be a non-empty id such as 'run_abc', got {run_id!r}."
        )
    return run_id


def safe_export_filename(run_id: str, fmt: ExportFormat) -> str:
    """A local name derived from the run id alone: never from the server's hint."""
    name = f"{run_id}.{fmt.value}"
    if not _SAFE_FILENAME.fullmatch(name) or ".." in name:
        # hashlib, not hash(): Python salts str hashes per process, and the name must not move.
        digest = hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        name = f"export-{digest}.{fmt.value}"
    return name


def _check_export(path: Path, fmt: ExportFormat) -> None:
    """Refuse a body that is not a whole file before it takes the target's name."""
    size = path.stat().st_size
    if fmt is ExportFormat.PARQUET:
        import pyarrow.parquet as pq

        with path.open("rb") as f:
            head = f.read(4)
            if size >= 8:
                f.seek(-4, os.SEEK_END)
            tail = f.read(4)
        if size < 12 or head != b"PAR1" or tail != b"PAR1":
            raise ExtraltExportError(
                f"Export is not a complete Parquet file ({size:,} bytes, missing magic bytes); "
                "it was truncated or corrupted in transit."
            )
        try:
            pq.read_metadata(path)
        except Exception as exc:
            raise ExtraltExportError(f"Export's Parquet footer is unreadable: {exc}") from None
    elif size:
        with path.open("rb") as f:
            f.seek(max(0, size - 65536))
            tail = f.read()
        last = tail.rstrip().rsplit(b"\n", 1)[-1]
        if not last.strip() and size <= len(tail):
            return  # only blank lines: a run with no captures
        try:
            json.loads(last)
        except ValueError:
            raise ExtraltExportError(
                "Export's last JSONL line is not valid JSON; it was truncated or corrupted."
            ) from None
