"""The warehouse in plain Python and duckdb: no Dagster.

Where a source's tables live, how an export is loaded into them in one transaction, and their
row counts; see `load` for the objects and the rules of a load.
"""

from .load import (
    DEFAULT_SCHEMA,
    DEFAULT_SETTINGS,
    DOCUMENTED_TYPES,
    META_COLUMNS,
    OLDEST_READER,
    STORAGE_COMPATIBILITY_VERSION,
    VARIANT_COLUMNS,
    CheapOffer,
    LoadResult,
    RunRecord,
    SourceSummary,
    Summary,
    Target,
    WarehouseError,
    WarehouseExportError,
    WarehouseLockedError,
    WarehouseSchemaError,
    WarehouseStats,
    connect,
    load_export,
    summarize,
    table_stats,
)

__all__ = [
    "DEFAULT_SCHEMA",
    "DEFAULT_SETTINGS",
    "DOCUMENTED_TYPES",
    "META_COLUMNS",
    "OLDEST_READER",
    "STORAGE_COMPATIBILITY_VERSION",
    "VARIANT_COLUMNS",
    "CheapOffer",
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
    "connect",
    "load_export",
    "summarize",
    "table_stats",
]
