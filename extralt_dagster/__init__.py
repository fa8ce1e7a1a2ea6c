"""extralt-dagster: Extralt runs as Dagster assets, loaded into DuckDB."""

from .api.client import DEFAULT_BASE_URL, ExtraltClient
from .api.errors import (
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
from .api.models import ExportFormat, ExtraltRun, RunStatus
from .api.run_handler import ExtraltRunHandler, PollSettings
from .assets.captures import ExtraltCapturesConfig
from .assets.run import ExtraltRunConfig, build_extralt_assets
from .component import ExtraltComponent
from .resource import ExtraltResource
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
