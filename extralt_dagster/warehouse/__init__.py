"""The warehouse in plain Python and duckdb: no Dagster.

Where a source's tables live and how to open them (``target``: a DuckDB file or a DuckLake), how an export is loaded into
them in one transaction (``load``, which also lists the objects and the rules of a load), and
their row counts (``stats``).
"""

from .errors import (
    WarehouseError,
    WarehouseExportError,
    WarehouseLockedError,
    WarehouseSchemaError,
)
from .load import load_export
from .records import LoadResult, RunRecord
from .retention import HistoryRetention
from .schema import DOCUMENTED_TYPES
from .sql import META_COLUMNS, VARIANT_COLUMNS, column_description
from .stats import (
    CheapOffer,
    SourceSummary,
    Summary,
    WarehouseStats,
    credits_since,
    summarize,
    table_stats,
)
from .target import (
    DEFAULT_DUCKDB_PATH,
    DEFAULT_LAKE_ALIAS,
    DEFAULT_SCHEMA,
    DEFAULT_SETTINGS,
    OLDEST_READER,
    STORAGE_COMPATIBILITY_VERSION,
    Capabilities,
    Lake,
    Target,
    connect,
    ensure_folder,
)

__all__ = [
    "DEFAULT_DUCKDB_PATH",
    "DEFAULT_LAKE_ALIAS",
    "DEFAULT_SCHEMA",
    "DEFAULT_SETTINGS",
    "DOCUMENTED_TYPES",
    "META_COLUMNS",
    "OLDEST_READER",
    "STORAGE_COMPATIBILITY_VERSION",
    "VARIANT_COLUMNS",
    "Capabilities",
    "CheapOffer",
    "HistoryRetention",
    "Lake",
    "LoadResult",
    "RunRecord",
    "SourceSummary",
    "Summary",
    "Target",
    "WarehouseError",
    "WarehouseExportError",
    "WarehouseLockedError",
    "WarehouseSchemaError",
    "WarehouseStats",
    "column_description",
    "connect",
    "credits_since",
    "ensure_folder",
    "load_export",
    "summarize",
    "table_stats",
]
