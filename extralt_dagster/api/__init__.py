"""The Extralt API in plain Python and httpx: no Dagster.

`ExtraltClient` speaks the HTTP API (safe creates, paging, streamed exports); `transport`
carries each request (the reused httpx client, bounded retries, typed errors), `exports` writes
the export file; `ExtraltRunHandler` runs, waits for and stops one run; `models` holds the run
document, statuses and the input checks every layer shares; `errors` draws the error tree.
This `__all__` is the layer's public list; the package's `__all__` extends it.
"""

from .client import ExtraltClient
from .errors import (
    ExtraltAPIError,
    ExtraltAuthError,
    ExtraltConflictError,
    ExtraltConnectError,
    ExtraltConnectionError,
    ExtraltError,
    ExtraltExportError,
    ExtraltInsufficientCreditsError,
    ExtraltNotFoundError,
    ExtraltRateLimitError,
    ExtraltReadError,
    ExtraltRunFailedError,
    ExtraltServerError,
    ExtraltTimeoutError,
    ExtraltUnknownStatusError,
    ExtraltValidationError,
)
from .models import CREDITS_PER_CAPTURE, DEFAULT_BASE_URL, ExportFormat, ExtraltRun, RunStatus
from .run_handler import ExtraltRunHandler, PollSettings

__all__ = [
    "CREDITS_PER_CAPTURE",
    "DEFAULT_BASE_URL",
    "ExportFormat",
    "ExtraltAPIError",
    "ExtraltAuthError",
    "ExtraltClient",
    "ExtraltConflictError",
    "ExtraltConnectError",
    "ExtraltConnectionError",
    "ExtraltError",
    "ExtraltExportError",
    "ExtraltInsufficientCreditsError",
    "ExtraltNotFoundError",
    "ExtraltRateLimitError",
    "ExtraltReadError",
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
