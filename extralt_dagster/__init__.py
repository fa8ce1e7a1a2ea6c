"""extralt-dagster: Extralt runs as Dagster assets, loaded into DuckDB."""

from .assets import ExtraltRunConfig, build_extralt_assets
from .captures import ExtraltCapturesConfig
from .client import DEFAULT_BASE_URL, ExtraltClient
from .component import ExtraltComponent
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
from .schedules import build_extralt_job, build_extralt_schedule
from .sources import (
    ExtraltSources,
    SourceDefaults,
    SourcesFileError,
    SourceSpec,
    load_extralt_definitions,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "ExportFormat",
    "ExtraltAPIError",
    "ExtraltAuthError",
    "ExtraltCapturesConfig",
    "ExtraltClient",
    "ExtraltComponent",
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
    "ExtraltSources",
    "ExtraltTimeoutError",
    "ExtraltUnknownStatusError",
    "ExtraltValidationError",
    "PollSettings",
    "RunStatus",
    "SourceDefaults",
    "SourceSpec",
    "SourcesFileError",
    "build_extralt_assets",
    "build_extralt_job",
    "build_extralt_schedule",
    "load_extralt_definitions",
]
