"""The warehouse's errors. Every one leaves the warehouse as it was before the call.

ExtraltError                  (api.errors: the project's base)
 └── WarehouseError           a load or a connection failed; ``retryable`` says if a retry may help
      ├── WarehouseSchemaError   a column's type changed in a way history cannot absorb
      ├── WarehouseExportError   the export file is corrupt or not an export
      └── WarehouseLockedError   another process held the DuckDB file past the timeout
"""

from __future__ import annotations

import duckdb

from ..api.errors import ExtraltError

__all__ = [
    "WarehouseError",
    "WarehouseExportError",
    "WarehouseLockedError",
    "WarehouseSchemaError",
]


class WarehouseError(ExtraltError):
    """A load or a connection failed; the warehouse is as it was before the call.

    ``retryable`` says whether the same call may succeed later: True for a held lock, an I/O
    error (disk full) or a transaction conflict; False for what fails the same way every time
    (a binder or catalog error, a schema conflict, a corrupt export, a bad argument).
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class WarehouseSchemaError(WarehouseError):
    """The export changed a column's type in a way the history table cannot absorb."""

    def __init__(self, message: str, *, column: str, old_type: str, new_type: str) -> None:
        super().__init__(message)
        self.column = column
        self.old_type = old_type
        self.new_type = new_type


class WarehouseExportError(WarehouseError):
    """The export file is corrupt or not an export: loading it again cannot help."""

    def __init__(self, message: str, *, path: str, location: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        #: Where the damage is, when it can be told ("row group 2 of 10, counting from 0; ...").
        self.location = location


class WarehouseLockedError(WarehouseError):
    """Another process holds the DuckDB file's lock and kept it past the timeout."""

    def __init__(self, message: str, *, database: str, holder_pid: int | None = None) -> None:
        super().__init__(message, retryable=True)
        self.database = database
        #: The process holding the lock, as DuckDB reports it (None if it did not say).
        self.holder_pid = holder_pid


#: DuckDB errors a later attempt may not meet: I/O (a full disk, a file system hiccup), a
#: conflicting transaction, an interrupt. A binder, catalog, parser, conversion or constraint
#: error comes from the SQL and the data, and repeats on every attempt.
_RETRYABLE_DUCKDB_ERRORS = (
    duckdb.IOException,
    duckdb.TransactionException,
    duckdb.InterruptException,
    duckdb.HTTPException,
)


def _setting(conn: duckdb.DuckDBPyConnection, name: str) -> str:
    """A DuckDB setting, for an error message; "unknown" when it cannot be read."""
    try:
        row = conn.execute("SELECT current_setting(?)", [name]).fetchone()
    except duckdb.Error:
        return "unknown"
    return str(row[0]) if row else "unknown"
