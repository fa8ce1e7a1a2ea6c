"""extralt-dagster: Extralt runs as Dagster assets, loaded into DuckDB."""

from .assets import ExtraltRunConfig, build_extralt_assets
from .captures import ExtraltCapturesConfig
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
from .models import ExportFormat, ExtraltRun, RunStatus
from .resource import ExtraltResource
from .run_handler import ExtraltRunHandler, PollSettings

__all__ = [
    "DEFAULT_BASE_URL",
    "ExportFormat",
    "ExtraltAPIError",
    "ExtraltAuthError",
    "ExtraltCapturesConfig",
    "ExtraltClient",
    "ExtraltConflictError",
    "ExtraltConnectionError",
    "ExtraltError",
    "ExtraltExportError",
    "ExtraltInsufficientCreditsError",
    "ExtraltNotFoundError",
    "ExtraltRateLimitError",
    "ExtraltResource",
    "ExtraltRun",
    "ExtraltRunConfig",
    "ExtraltRunFailedError",
    "ExtraltRunHandler",
    "ExtraltServerError",
    "ExtraltTimeoutError",
    "ExtraltUnknownStatusError",
    "ExtraltValidationError",
    "PollSettings",
    "RunStatus",
    "build_extralt_assets",
]
