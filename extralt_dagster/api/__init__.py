"""The Extralt API in plain Python and httpx: no Dagster.

`ExtraltClient` speaks the HTTP API (typed errors, bounded retries, safe creates, streamed
exports); `ExtraltRunHandler` runs, waits for and stops one run; `models` holds the run
document, statuses and the input checks every layer shares.
"""

from .client import DEFAULT_BASE_URL, ExtraltClient
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
    ExtraltRunFailedError,
    ExtraltServerError,
    ExtraltTimeoutError,
    ExtraltUnknownStatusError,
    ExtraltValidationError,
)
from .models import CREDITS_PER_CAPTURE, ExportFormat, ExtraltRun, RunStatus
from .run_handler import ExtraltRunHandler, PollSettings

__all__ = [
    "CREDITS_PER_CAPTURE",
    "DEFAULT_BASE_URL",
    "ExportFormat",
    "ExtraltAPIError",
    "ExtraltAuthError",
    "ExtraltClient",
    "ExtraltConflictError",
    "ExtraltConnectionError",
    "ExtraltError",
    "ExtraltExportError",
    "ExtraltInsufficientCreditsError",
    "ExtraltNotFoundError",
    "ExtraltRateLimitError",
    "ExtraltRun",
    "ExtraltRunFailedError",
    "ExtraltRunHandler",
    "ExtraltServerError",
    "ExtraltTimeoutError",
    "ExtraltUnknownStatusError",
    "ExtraltValidationError",
    "PollSettings",
    "RunStatus",
]
