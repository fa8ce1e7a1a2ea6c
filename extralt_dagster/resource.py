"""`ExtraltResource`: typed Dagster config around `ExtraltClient`. Glue only."""

from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from .api.client import ExtraltClient
from .api.errors import ExtraltAuthError
from .api.models import DEFAULT_BASE_URL
from .api.run_handler import PollSettings
from .api.transport import RetryPolicy

DEFAULT_POLL_TIMEOUT_SECONDS = 6 * 3600.0


class ExtraltResource(dg.ConfigurableResource):
    """The Extralt API for one step: one HTTP client, opened at setup and closed at teardown."""

    api_key: str = Field(
        description="Extralt API key. Give it as dg.EnvVar('EXTRALT_API_KEY'); it is never logged."
    )
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description="API base URL. https only, except 127.0.0.1/localhost (the local emulator).",
    )
    request_timeout_seconds: float = Field(default=30.0, gt=0, description="Per-request timeout.")
    max_retries: int = Field(
        default=RetryPolicy.max_retries,
        ge=0,
        description="Retries of connect/read errors, 429 and 5xx per request.",
    )
    retry_backoff_seconds: float = Field(
        default=RetryPolicy.backoff_seconds,
        gt=0,
        description="Base of the exponential backoff (full jitter) for 5xx.",
    )
    rate_limit_backoff_seconds: float = Field(
        default=RetryPolicy.rate_limit_backoff_seconds,
        gt=0,
        description="First wait after a 429 without Retry-After (doubles).",
    )
    retry_timeout_seconds: float = Field(
        default=RetryPolicy.retry_timeout_seconds,
        gt=0,
        description="Upper bound on the time one request may spend retrying.",
    )
    poll_interval_seconds: float = Field(
        default=10.0, gt=0, description="Longest wait between polls (the API's advice: 10 s)."
    )
    initial_poll_interval_seconds: float = Field(
        default=1.0, gt=0, description="First wait between polls; grows 1.5x per poll."
    )
    poll_timeout_seconds: float = Field(
        default=DEFAULT_POLL_TIMEOUT_SECONDS,
        gt=0,
        description="Give up waiting after this long (default 6 h); see stop_on_timeout.",
    )
    heartbeat_seconds: float = Field(
        default=60.0, gt=0, description="How often to log progress while nothing changes."
    )
    stop_on_timeout: bool = Field(
        default=True, description="Stop the Extralt run when poll_timeout_seconds passes."
    )
    stop_on_termination: bool = Field(
        default=True, description="Stop the Extralt run when the Dagster run is terminated."
    )
    stop_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Bound on a best-effort stop request."
    )
    max_export_bytes: int | None = Field(
        default=None, gt=0, description="Abort an export download larger than this."
    )
    rate_limit_per_minute: float | None = Field(
        default=120.0, description="Client-side token bucket; None disables it."
    )
    dashboard_url_template: str | None = Field(
        default=None, description="Link to a run in logs and metadata, with {run_id}."
    )

    _client: ExtraltClient | None = PrivateAttr(default=None)

    def __repr__(self) -> str:
        return f"ExtraltResource(base_url={self.base_url!r}, api_key='***')"

    __str__ = __repr__

    def __repr_args__(self) -> Any:
        return [(k, "***" if k == "api_key" else v) for k, v in super().__repr_args__()]

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._client = self.make_client()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def make_client(self) -> ExtraltClient:
        """A new client from this config; the caller closes it."""
        if not self.api_key or not self.api_key.strip():
            raise ExtraltAuthError(
                "ExtraltResource.api_key is empty. Set EXTRALT_API_KEY to your Extralt API key "
                "(or run the local emulator: see the README)."
            )
        return ExtraltClient(  # which checks base_url before any request
            self.api_key,
            self.base_url,
            timeout=self.request_timeout_seconds,
            max_retries=self.max_retries,
            backoff_seconds=self.retry_backoff_seconds,
            rate_limit_backoff_seconds=self.rate_limit_backoff_seconds,
            retry_timeout_seconds=self.retry_timeout_seconds,
            rate_limit_per_minute=self.rate_limit_per_minute,
            max_export_bytes=self.max_export_bytes,
            dashboard_url_template=self.dashboard_url_template,
        )

    def get_client(self) -> ExtraltClient:
        """The step's shared client (opened at setup)."""
        if self._client is None:
            self._client = self.make_client()
        return self._client

    def poll_settings(self, timeout_seconds: float | None = None) -> PollSettings:
        return PollSettings(
            interval_seconds=self.poll_interval_seconds,
            initial_interval_seconds=self.initial_poll_interval_seconds,
            timeout_seconds=timeout_seconds or self.poll_timeout_seconds,
            heartbeat_seconds=self.heartbeat_seconds,
            stop_on_timeout=self.stop_on_timeout,
            stop_timeout_seconds=self.stop_timeout_seconds,
        )
