"""What goes into a load and what comes out: the run being loaded and the load's result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..api.models import CREDITS_PER_CAPTURE, ExtraltRun
from .errors import WarehouseError

__all__ = ["ORIGINS", "LoadResult", "RunRecord"]

#: Where a run came from, as the run log's ``origin`` says: started by Dagster (the ``run``
#: asset), or by Extralt itself (its schedules, a person on its dashboard). Rows logged before
#: the column existed were all Dagster's.
ORIGINS = ("dagster", "extralt")


@dataclass(frozen=True)
class RunRecord:
    """The Extralt run being loaded, as the run log records it."""

    run_id: str
    robot_id: str | None = None
    robot_name: str | None = None
    status: str | None = None
    extracted: int | None = None
    budget: int | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    duration_seconds: float | None = None
    dagster_run_id: str | None = None
    origin: str = "dagster"

    def __post_init__(self) -> None:
        if not isinstance(self.run_id, str) or not self.run_id.strip():
            raise WarehouseError(f"run_id must be a non-empty string, got {self.run_id!r}")
        if self.origin not in ORIGINS:
            raise WarehouseError(f"origin must be one of {', '.join(ORIGINS)}, got {self.origin!r}")

    @property
    def credits(self) -> int | None:
        return None if self.extracted is None else self.extracted * CREDITS_PER_CAPTURE

    @classmethod
    def from_run(
        cls, run: ExtraltRun, *, dagster_run_id: str | None = None, origin: str = "dagster"
    ) -> RunRecord:
        return cls(
            run_id=run.id,
            robot_id=run.robot_id,
            robot_name=run.robot_name,
            status=str(run.status),
            extracted=run.extracted,
            budget=run.budget,
            created_at=run.created_at,
            started_at=run.started_at,
            duration_seconds=run.duration,
            dagster_run_id=dagster_run_id,
            origin=origin,
        )


@dataclass(frozen=True)
class LoadResult:
    """What one ``load_export`` did; counts are after the load unless named ``*_for_run``."""

    run_id: str
    #: Captures of this run now in history (= rows in the export).
    rows: int
    history_rows: int
    #: Rows of the products table (distinct non-NULL product keys in history).
    products: int
    variants: int
    variants_for_run: int
    #: Rows in the run log for this source.
    runs_logged: int
    #: True when this load created the history table (no drift is reported then).
    created: bool
    #: Columns new to history, then fields new to a nested column, by path
    #: (``variants[].offers[].warranty``).
    columns_added: tuple[str, ...]
    #: History columns, then nested fields by path, that the export lacks (loaded as NULL).
    columns_missing: tuple[str, ...]
    #: (path, old type, new type) for each column, or nested field, whose type this load widened.
    columns_widened: tuple[tuple[str, str, str], ...]
    #: Export columns named like a loader column (run_id, robot_id, loaded_at, product_key).
    columns_ignored: tuple[str, ...]
    #: The history table's columns and real DuckDB types, after the load.
    column_types: tuple[tuple[str, str], ...]
    #: Captures of this run whose id repeats an earlier one of the run (count - distinct).
    duplicate_ids: int
    null_price_rows: int
    inverted_price_rows: int
    load_seconds: float
    #: Up to 5 captures of the run: title, brand, min_price, currency, available.
    preview: tuple[dict[str, Any], ...] = field(default=())
    #: Seconds per step: prepare, history, variants, products_and_run_log, checks, commit.
    phase_seconds: Mapping[str, float] = field(default_factory=dict)
    table_names: Mapping[str, str] = field(default_factory=dict)
    #: The DuckDB catalog loaded into (named after the file): ``catalog.schema.table`` always
    #: works, and ``schema.table`` is ambiguous for readers when the two names are the same.
    catalog: str | None = None
    #: Captures the run document says the run extracted; None when it does not say.
    extracted: int | None = None
    #: (column, placeholder type, real type) for each column that held no value in history
    #: (an earlier load had no type for it: NULL everywhere, empty lists) and that this load
    #: gave its real type. Not drift: a placeholder is not a type.
    columns_typed: tuple[tuple[str, str, str], ...] = ()
    #: Captures of this run whose ``extracted_at`` is set but is no instant (NaN, infinite, out
    #: of TIMESTAMPTZ's range, unparseable): history keeps the value, variants have NULL.
    unconverted_extracted_at: int = 0
    #: Runs of this source that history retention dropped in this load (their captures,
    #: variants and run log rows), newest first.
    runs_dropped: tuple[str, ...] = ()
    #: On a lake: the snapshot this load committed. ``SELECT ... FROM t AT (VERSION => n)``
    #: reads the tables as they were right after it. None for a DuckDB file.
    snapshot_id: int | None = None

    @property
    def drifted(self) -> bool:
        return bool(self.columns_added or self.columns_missing or self.columns_widened)

    @property
    def distinct_captures(self) -> int:
        """Captures of this run in the export, a repeated id counted once (rows without an id
        each count)."""
        return self.rows - self.duplicate_ids

    @property
    def missing_captures(self) -> int | None:
        """Captures the run extracted that the export lacks; None when ``extracted`` is unknown."""
        if self.extracted is None:
            return None
        return max(0, self.extracted - self.distinct_captures)
