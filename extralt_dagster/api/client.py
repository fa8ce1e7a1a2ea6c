"""A plain, typed HTTP client for the Extralt extract API. No Dagster in here.

The client speaks runs, captures and exports; `transport` carries each request (retries, rate
limit, typed errors) and `exports` streams the export file to disk.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import httpx

from . import exports
from .errors import (
    ExtraltAPIError,
    ExtraltAuthError,
    ExtraltConnectionError,
    ExtraltError,
    ExtraltServerError,
    ExtraltUnknownStatusError,
    ExtraltValidationError,
)
from .models import (
    DEFAULT_BASE_URL,
    ExportFormat,
    ExtraltRun,
    validate_base_url,
    validate_budget,
    validate_robot_id,
    validate_start_urls,
)
from .transport import (
    API_PREFIX,
    RetryPolicy,
    TokenBucket,
    Transport,
    describe,
    json_body,
    maybe_reached_server,
)

DEFAULT_DASHBOARD_URL = "https://app.extralt.com/runs/{run_id}"
#: How much earlier than our create request a run may look created, by the API's clock, and
#: still be the run that request started: the clock skew tolerated between us and the API.
CREATE_CLOCK_SKEW_SECONDS = 120.0

logger = logging.getLogger("extralt_dagster.client")

try:
    __version__ = version("extralt-dagster")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"


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
        max_retries: int = RetryPolicy.max_retries,
        backoff_seconds: float = RetryPolicy.backoff_seconds,
        max_backoff_seconds: float = RetryPolicy.max_backoff_seconds,
        rate_limit_backoff_seconds: float = RetryPolicy.rate_limit_backoff_seconds,
        retry_timeout_seconds: float = RetryPolicy.retry_timeout_seconds,
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
        policy = RetryPolicy(
            max_retries=max_retries,
            backoff_seconds=backoff_seconds,
            max_backoff_seconds=max_backoff_seconds,
            rate_limit_backoff_seconds=rate_limit_backoff_seconds,
            retry_timeout_seconds=retry_timeout_seconds,
        )
        self.base_url = validate_base_url(base_url)
        self.max_export_bytes = max_export_bytes
        self.dashboard_url_template = dashboard_url_template or (
            DEFAULT_DASHBOARD_URL
            if self.base_url == DEFAULT_BASE_URL
            else f"{self.base_url}/runs/{{run_id}}"
        )
        bucket = (
            TokenBucket(rate_limit_per_minute, rate_limit_burst, sleep=sleep)
            if rate_limit_per_minute
            else None
        )
        self._transport = Transport(
            _open_http(self.base_url, api_key, timeout, connect_timeout, transport),
            self.base_url,
            api_key,
            policy,
            timeout=timeout,
            connect_timeout=connect_timeout,
            bucket=bucket,
            sleep=sleep,
        )

    def __repr__(self) -> str:
        return f"ExtraltClient(base_url={self.base_url!r}, api_key='***')"

    def __enter__(self) -> ExtraltClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

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
            response = self._transport.request("POST", "/runs", json=body, idempotent=False)
        except (ExtraltConnectionError, ExtraltServerError) as exc:
            if not maybe_reached_server(exc):
                raise
            return self._adopt_or_raise(exc, robot_id, budget, urls, sent_at, exclude_run_ids)
        return _id_from(response, f"POST {API_PREFIX}/runs")

    def _adopt_or_raise(
        self,
        exc: ExtraltError,
        robot_id: str,
        budget: int | None,
        urls: list[str] | None,
        sent_at: float,
        exclude: Collection[str],
    ) -> str:
        """After a create that may have reached the server: the run it started, or `exc`."""
        try:
            adopted = self.find_started_run(robot_id, budget, urls, since=sent_at, exclude=exclude)
        except ExtraltError as lookup_exc:
            raise ExtraltAPIError(
                f"Creating a run for robot {robot_id} failed ambiguously ({describe(exc)}) and "
                f"the follow-up look-up failed too ({type(lookup_exc).__name__}). A run may have "
                "started: check the Extralt dashboard before retrying."
            ) from exc
        if adopted is None:
            # Nothing yet: the create may still land (a slow server), so re-sending it could
            # pay twice. Fail; the caller's next attempt looks again before creating.
            exc.add_note(
                "The create request may still start a run; none was found yet, so it was not "
                "re-sent. A later attempt should call find_started_run() first (the Dagster "
                "asset does)."
            )
            raise exc
        logger.warning(
            "Create request for robot %s failed ambiguously (%s); adopting run %s that it "
            "had already started instead of paying for a second run.",
            robot_id,
            describe(exc),
            adopted,
        )
        return adopted

    def get_run(self, run_id: str) -> ExtraltRun:
        response = self._transport.request("GET", f"/runs/{_run_path(run_id)}")
        return ExtraltRun.from_api(json_body(response))

    def stop_run(self, run_id: str, *, timeout: float | None = None) -> None:
        """Ask the API to stop a run. `timeout` bounds the whole call, retries included."""
        self._transport.request("POST", f"/runs/{_run_path(run_id)}/stop", deadline=timeout)

    def restart_run(self, run_id: str, budget: int | None = None) -> str:
        """Restart a stopped, failed or completed run; follow the id the API answers with.

        The body carries `budget` only when one is given: the API documents it as an optional
        int, so no budget means no key (not `null`).
        """
        validate_budget(budget)
        body = {"budget": budget} if budget is not None else None
        response = self._transport.request(
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

    def runs_page(
        self,
        cursor: str | None = None,
        *,
        page_size: int = 100,
        retry: bool = True,
        deadline: float | None = None,
    ) -> RunsPage:
        """One page of `GET /runs`: the first (no `cursor`) or the one a `nextCursor` names.

        `retry=False` makes it exactly one request (a sensor tick counts its requests);
        `deadline` bounds it in seconds. A page without `rows` raises; a row that is no run
        document we can read (an unknown status, a malformed field) lands in `unreadable`, so
        one odd row never hides the rest of the list."""
        params: dict[str, Any] = {"limit": page_size, **({"cursor": cursor} if cursor else {})}
        response = self._transport.request(
            "GET", "/runs", params=params, retry=retry, deadline=deadline
        )
        rows, next_cursor = _page_rows("/runs", json_body(response))
        runs, unreadable = [], []
        for doc in rows:
            try:
                runs.append(ExtraltRun.from_api(doc))
            except (ExtraltAPIError, ExtraltUnknownStatusError) as exc:
                unreadable.append(str(exc))
        return RunsPage(runs=runs, next_cursor=next_cursor, unreadable=unreadable)

    def iter_captures(self, run_id: str, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Capture rows one page at a time; use `download_export` for bulk data."""
        yield from self._paginate("/captures", {"run_id": run_id, "limit": page_size})

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
        floor_ms = (since - CREATE_CLOCK_SKEW_SECONDS) * 1000
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
        return exports.download_export(
            self._transport,
            run_id,
            Path(dest),
            ExportFormat(format),
            max_bytes=self.max_export_bytes,
        )

    # --- Paging ---------------------------------------------------------------------------

    def _paginate(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            query = dict(params, **({"cursor": cursor} if cursor else {}))
            rows, cursor = _page_rows(
                path, json_body(self._transport.request("GET", path, params=query))
            )
            yield from rows
            if cursor is None:
                return
            if cursor in seen:
                raise ExtraltAPIError(f"GET {path}: the API repeated cursor {cursor!r}")
            seen.add(cursor)


@dataclass(frozen=True)
class RunsPage:
    """One page of the run list, and the cursor of the next (None: this was the last)."""

    runs: list[ExtraltRun]
    next_cursor: str | None
    #: Why each row that is no readable run document was left out.
    unreadable: list[str] = field(default_factory=list)


def _page_rows(path: str, page: object) -> tuple[list[Any], str | None]:
    """A list page's rows (`rows`, or `items` in older docs) and its `nextCursor`."""
    if not isinstance(page, dict):
        raise ExtraltAPIError(f"GET {path}: expected a JSON object page")
    rows = page.get("rows", page.get("items"))
    if not isinstance(rows, list):
        raise ExtraltAPIError(f"GET {path}: page has no 'rows' list")
    cursor = page.get("nextCursor")
    if not cursor:
        return rows, None
    if not isinstance(cursor, str):
        raise ExtraltAPIError(f"GET {path}: 'nextCursor' is not a string: {cursor!r:.80}")
    return rows, cursor


def _open_http(
    base_url: str,
    api_key: str,
    timeout: float,
    connect_timeout: float,
    transport: httpx.BaseTransport | None,
) -> httpx.Client:
    """The one `httpx.Client` every request and export of a client goes through."""
    return httpx.Client(
        base_url=base_url,
        headers={
            "Authorization": f"Bearer {api_key}",
            "User-Agent": f"extralt-dagster/{__version__} httpx/{httpx.__version__}",
            "Accept": "application/json",
        },
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        transport=transport,
        follow_redirects=False,
    )


def _id_from(response: httpx.Response, what: str) -> str:
    body = json_body(response)
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
