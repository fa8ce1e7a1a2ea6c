"""The run, its status, and the input checks shared by the client, assets and YAML."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from .errors import ExtraltAPIError, ExtraltUnknownStatusError, ExtraltValidationError

CREDITS_PER_CAPTURE = 2
DEFAULT_BASE_URL = "https://api.extralt.com"


class RunStatus(StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def is_live(self) -> bool:
        """Still costs or may cost credits: worth resuming, and worth stopping."""
        return not self.is_terminal

    @classmethod
    def parse(cls, value: object, run_id: str | None = None) -> RunStatus:
        try:
            return cls(str(value))
        except ValueError:
            raise ExtraltUnknownStatusError(str(value), run_id) from None


#: The statuses a run never leaves by itself (the only definition: a StrEnum, so the plain
#: strings "completed", "failed" and "stopped" are members too).
TERMINAL_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.STOPPED})


#: The export formats as users write them (YAML, run config, `build_extralt_assets`); the
#: enum below is the same two values for the client. Every layer checks against these.
ExportFormatName = Literal["parquet", "jsonl"]
EXPORT_FORMATS: tuple[ExportFormatName, ...] = get_args(ExportFormatName)


class ExportFormat(StrEnum):
    PARQUET = "parquet"
    JSONL = "jsonl"


def _ms_to_datetime(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"expected epoch milliseconds, got {value!r}")
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def _opt_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class ExtraltRun:
    """One Extralt run as the API reported it; `raw` keeps fields we do not model."""

    id: str
    status: RunStatus
    extracted: int
    in_queue: int | None
    robot_id: str | None
    robot_name: str | None
    name: str | None
    budget: int | None
    auto_enrich: bool | None
    created_at: datetime | None
    started_at: datetime | None
    duration: float | None  # seconds
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def credits_spent(self) -> int:
        return self.extracted * CREDITS_PER_CAPTURE

    @property
    def error_message(self) -> str | None:
        for key in ("errorMessage", "error", "message", "reason"):
            value = self.raw.get(key)
            if isinstance(value, str) and value:
                return value
        return None

    @classmethod
    def from_api(cls, doc: object) -> ExtraltRun:
        """Parse a run document; a body of the wrong shape is an API error, not a KeyError."""
        if not isinstance(doc, Mapping):
            raise ExtraltAPIError(
                f"Expected a run document (JSON object), got {type(doc).__name__}"
            )
        run_id = doc.get("_id", doc.get("id"))
        if not isinstance(run_id, str) or not run_id:
            raise ExtraltAPIError("Run document has no '_id'")
        if "status" not in doc:
            raise ExtraltAPIError(f"Run document for {run_id} has no 'status'")
        status = RunStatus.parse(doc["status"], run_id)
        try:
            duration_ms = doc.get("duration")
            auto_enrich = doc.get("autoEnrich")
            return cls(
                id=run_id,
                status=status,
                extracted=_opt_int(doc.get("extracted")) or 0,
                in_queue=_opt_int(doc.get("inQueue")),
                robot_id=_opt_str(doc.get("robotId")),
                robot_name=_opt_str(doc.get("robotName")),
                name=_opt_str(doc.get("name")),
                budget=_opt_int(doc.get("budget")),
                auto_enrich=bool(auto_enrich) if auto_enrich is not None else None,
                created_at=_ms_to_datetime(doc.get("createdAt")),
                started_at=_ms_to_datetime(doc.get("startedAt")),
                duration=None if duration_ms is None else float(duration_ms) / 1000,
                raw=dict(doc),
            )
        except (TypeError, ValueError) as exc:
            raise ExtraltAPIError(f"Run document for {run_id} is malformed: {exc}") from None


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


# --- Input checks: they run before any request, so bad input never costs a call. ---


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


IDENTIFIER_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def validate_identifier(value: object, field_name: str) -> str:
    """Source and schema names become SQL identifiers and asset-key parts."""
    if not isinstance(value, str) or not IDENTIFIER_RE.fullmatch(value) or len(value) > 63:
        raise ExtraltValidationError(
            f"{field_name} must be a lowercase identifier matching [a-z][a-z0-9_]* "
            f"(at most 63 characters), got {value!r}."
        )
    return value


def validate_robot_id(value: object, field_name: str = "robot_id") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ExtraltValidationError(
            f"{field_name} must be a non-empty string such as 'rbt_abc123', got {value!r}."
        )
    if value != value.strip() or any(c.isspace() or c == "/" for c in value):
        raise ExtraltValidationError(
            f"{field_name} must not contain whitespace or '/', got {value!r}."
        )
    return value


def validate_start_urls(value: object, field_name: str = "start_urls") -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ExtraltValidationError(
            f"{field_name} must be a list of absolute http(s) URLs, got {value!r}."
        )
    urls = list(value)
    if not urls:
        raise ExtraltValidationError(
            f"{field_name} is an empty list; omit it to use the robot's default entry points."
        )
    for i, url in enumerate(urls):
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ExtraltValidationError(
                f"{field_name}[{i}] must be an absolute http:// or https:// URL, got {url!r}."
            )
    return urls


def validate_budget(value: object, field_name: str = "budget") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ExtraltValidationError(
            f"{field_name} must be a positive whole number of captures, got {value!r}."
        )
    return value
