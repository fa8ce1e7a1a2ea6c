"""Maintenance of a DuckLake: fewer, bigger files, snapshots that expire, files that go.

A lake never deletes anything by itself: every load adds Parquet files (one per table it writes),
every snapshot stays readable by time travel, and a load killed before its commit leaves its
files behind, known to no snapshot. ``maintain`` runs DuckLake's own functions, in the order
DuckLake's ``CHECKPOINT`` runs them, each with our ages instead of catalog-wide options:

1. ``ducklake_expire_snapshots``: snapshots older than ``expire_snapshots_older_than`` (the
   newest snapshot always stays); time travel to them fails from then on.
2. ``ducklake_merge_adjacent_files``: each table's small files merged into bigger ones. Time
   travel to the snapshots that remain still works (a snapshot may read part of a file).
3. ``ducklake_rewrite_data_files``: files mostly deleted (retention) rewritten without the
   deleted rows, at DuckLake's default threshold.
4. ``ducklake_cleanup_old_files``: the files the lake scheduled for deletion (merged away,
   rewritten, or only in expired snapshots) once scheduled ``delete_files_older_than`` ago: a
   reader's query that started before the merge may still be scanning them.
5. ``ducklake_delete_orphaned_files``: Parquet files in the data path that no snapshot knows,
   once ``delete_files_older_than`` old (their modification time): a load that is still
   running has written files its commit will register, so a fresh unknown file is not an
   orphan yet. The default, 1 day, is longer than any load.

Inlined rows (writes under 10 rows, kept in the catalog) are left there: flushing them would
only write more small files. The sizes of deleted files are read (``read_blob``, no content)
before they go, so ``bytes_freed`` is what left the data path, local or object store.

A DuckDB file is not maintained: it has no snapshots, small files or orphans, reuses its freed
blocks itself (README, "History retention") and checkpoints on its own; a job holding its
lock would only block the loads. ``maintain`` refuses one.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import duckdb

from .errors import WarehouseError
from .target import attached_catalog, capabilities

__all__ = [
    "DEFAULT_DELETE_FILES_OLDER_THAN",
    "DEFAULT_EXPIRE_SNAPSHOTS_OLDER_THAN",
    "MaintenancePolicy",
    "MaintenanceResult",
    "maintain",
    "parse_duration",
]

DEFAULT_EXPIRE_SNAPSHOTS_OLDER_THAN = "7 days"
DEFAULT_DELETE_FILES_OLDER_THAN = "1 day"

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION_RE = re.compile(
    r"^\s*(\d+)\s*(s|secs?|seconds?|m|mins?|minutes?|h|hours?|d|days?|w|weeks?)\s*$",
    re.IGNORECASE,
)


def parse_duration(text: object, label: str = "duration") -> timedelta:
    """``"7 days"``, ``"7d"``, ``"12 hours"``, ``"30m"``, ``"1 week"``: a whole number and a
    unit (seconds, minutes, hours, days, weeks; 0 allowed). Raises ``WarehouseError`` naming
    ``label``."""
    match = _DURATION_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise WarehouseError(
            f"{label} must be a duration such as '7 days', '1 day', '12 hours' or '30m' (a "
            f"whole number, then seconds, minutes, hours, days or weeks), got {text!r}."
        )
    unit = _UNITS[match[2][0].lower()]
    return timedelta(**{unit: int(match[1])})


@dataclass(frozen=True)
class MaintenancePolicy:
    """How old a snapshot is before it expires, and a file before it is deleted."""

    expire_snapshots_older_than: timedelta = field(
        default_factory=lambda: parse_duration(DEFAULT_EXPIRE_SNAPSHOTS_OLDER_THAN)
    )
    delete_files_older_than: timedelta = field(
        default_factory=lambda: parse_duration(DEFAULT_DELETE_FILES_OLDER_THAN)
    )

    def __post_init__(self) -> None:
        for name in ("expire_snapshots_older_than", "delete_files_older_than"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value < timedelta(0):
                raise WarehouseError(f"{name} must be a duration of 0 or more, got {value!r}.")

    @classmethod
    def parse(
        cls,
        expire_snapshots_older_than: str = DEFAULT_EXPIRE_SNAPSHOTS_OLDER_THAN,
        delete_files_older_than: str = DEFAULT_DELETE_FILES_OLDER_THAN,
        *,
        prefix: str = "",
    ) -> MaintenancePolicy:
        """A policy from durations as written (``"7 days"``); errors name ``prefix`` + field."""
        return cls(
            expire_snapshots_older_than=parse_duration(
                expire_snapshots_older_than, f"{prefix}expire_snapshots_older_than"
            ),
            delete_files_older_than=parse_duration(
                delete_files_older_than, f"{prefix}delete_files_older_than"
            ),
        )


@dataclass(frozen=True)
class MaintenanceResult:
    """What one maintenance run did to a lake."""

    #: The lake's catalog alias.
    catalog: str
    #: Files read by merges and rewrites, and the files they wrote instead.
    files_merged: int
    files_written: int
    #: Files merged per table (``schema.table``), where any were.
    merged_by_table: Mapping[str, int]
    snapshots_expired: int
    #: The oldest snapshot left: time travel reaches back to it.
    oldest_snapshot: int
    #: Files scheduled for deletion (merged away, rewritten, expired) that were deleted.
    old_files_deleted: int
    #: Parquet files no snapshot knew, deleted.
    orphans_deleted: int
    bytes_freed: int
    #: Data and delete files of the current snapshot, before and after.
    live_files_before: int
    live_files_after: int
    seconds: float

    @property
    def files_deleted(self) -> int:
        return self.old_files_deleted + self.orphans_deleted


def maintain(
    conn: duckdb.DuckDBPyConnection,
    policy: MaintenancePolicy | None = None,
    *,
    now: datetime | None = None,
) -> MaintenanceResult:
    """Expire, merge, rewrite and delete on the lake ``conn`` uses (``warehouse.connect(lake)``).

    Each step commits on its own: a failure leaves what the steps before did, all of it
    consistent (DuckLake's functions are transactional). Raises ``WarehouseError`` for a
    connection that is not on a lake. ``now`` is for tests."""
    policy = policy or MaintenancePolicy()
    catalog = attached_catalog(conn)
    if not capabilities(conn, catalog).snapshots:
        raise WarehouseError(
            f"Maintenance is for a DuckLake, and {catalog!r} is a DuckDB database: it has no "
            "snapshots, small files or orphaned files, and reuses its freed space itself. "
            "Nothing to do; point the `duckdb` resource at a DuckLake (DuckLakeResource)."
        )
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    live_before = _live_files(conn, catalog)
    expired = _call(
        conn,
        "ducklake_expire_snapshots(?, older_than => ?)",
        [catalog, now - policy.expire_snapshots_older_than],
    )
    merged_by_table: dict[str, int] = {}
    written = 0
    for function in ("ducklake_merge_adjacent_files", "ducklake_rewrite_data_files"):
        for schema, table, processed, created in _call(conn, f"{function}(?)", [catalog]):
            name = f"{schema}.{table}"
            merged_by_table[name] = merged_by_table.get(name, 0) + int(processed)
            written += int(created)
    cutoff = now - policy.delete_files_older_than
    old_files, old_bytes = _delete_files(conn, "ducklake_cleanup_old_files", catalog, cutoff)
    orphans, orphan_bytes = _delete_files(conn, "ducklake_delete_orphaned_files", catalog, cutoff)
    [(oldest,)] = _call(conn, "ducklake_snapshots(?)", [catalog], columns="min(snapshot_id)")
    return MaintenanceResult(
        catalog=catalog,
        files_merged=sum(merged_by_table.values()),
        files_written=written,
        merged_by_table=merged_by_table,
        snapshots_expired=len(expired),
        oldest_snapshot=int(oldest),
        old_files_deleted=old_files,
        orphans_deleted=orphans,
        bytes_freed=old_bytes + orphan_bytes,
        live_files_before=live_before,
        live_files_after=_live_files(conn, catalog),
        seconds=time.perf_counter() - started,
    )


def _call(
    conn: duckdb.DuckDBPyConnection, function: str, params: list[object], columns: str = "*"
) -> list[tuple]:
    try:
        return conn.execute(f"SELECT {columns} FROM {function}", params).fetchall()
    except duckdb.Error as exc:
        name = function.partition("(")[0]
        raise WarehouseError(
            f"Lake maintenance stopped at {name}; the steps before it are committed, this one "
            f"changed nothing. DuckDB said: {exc}",
            retryable=isinstance(exc, duckdb.TransactionException | duckdb.IOException),
        ) from None


def _delete_files(
    conn: duckdb.DuckDBPyConnection, function: str, catalog: str, cutoff: datetime
) -> tuple[int, int]:
    """(files deleted, their bytes). The dry run lists them with the same cutoff, so the real
    run deletes the same files: one newer than the cutoff cannot join in between."""
    args = f"{function}(?, dry_run => ?, older_than => ?)"
    listed = [p for (p,) in _call(conn, args, [catalog, True, cutoff])]
    sizes = _sizes(conn, listed)
    deleted = [p for (p,) in _call(conn, args, [catalog, False, cutoff])]
    return len(deleted), sum(sizes.get(p, 0) for p in deleted)


def _sizes(conn: duckdb.DuckDBPyConnection, paths: list[str]) -> dict[str, int]:
    """Each file's size; a file already gone (deleted by hand) counts 0."""
    sql = "SELECT filename, size FROM read_blob(?)"
    try:
        rows = conn.execute(sql, [paths]).fetchall() if paths else []
    except duckdb.IOException:
        rows = []
        for path in paths:
            with contextlib.suppress(duckdb.IOException):
                rows += conn.execute(sql, [[path]]).fetchall()
    return {str(name): int(size) for name, size in rows}


def _live_files(conn: duckdb.DuckDBPyConnection, catalog: str) -> int:
    [(count,)] = conn.execute(
        "SELECT coalesce(sum(file_count + delete_file_count), 0) FROM ducklake_table_info(?)",
        [catalog],
    ).fetchall()
    return int(count)
