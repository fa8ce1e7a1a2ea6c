"""History retention: a source keeps its last N runs, or the runs of its last D days.

Off by default. Applied at the end of each load, in its transaction: the dropped runs' rows
leave history, the variants table and the run log, and the products whose newest capture they
held are ranked again over the history that remains (``latest``). A run's age is its Extralt
``created_at``, else when it was loaded; runs are ordered by that, then ``loaded_at`` and
``run_id``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import duckdb

from .errors import WarehouseError
from .latest import rerank_keys_of_runs
from .schema import _Type
from .target import Target

__all__ = ["HistoryRetention"]

_SPEC_RE = re.compile(r"^\s*(\d+)\s*(runs?|days?)\s*$")


@dataclass(frozen=True)
class HistoryRetention:
    """Keep the last ``runs`` runs, or the runs created in the last ``days`` days (one of the
    two). ``HistoryRetention.parse("30 runs")``, ``HistoryRetention.parse("90 days")``."""

    runs: int | None = None
    days: int | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.runs, self.days) if v is not None]
        if len(given) != 1 or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in given
        ):
            raise WarehouseError(
                "history_retention keeps either a number of runs or a number of days, "
                f"got runs={self.runs!r}, days={self.days!r}."
            )
        if given[0] < 1:
            raise WarehouseError(
                f"history_retention must keep at least 1 run or 1 day, got {given[0]}."
            )

    @classmethod
    def parse(cls, text: str, label: str = "history_retention") -> HistoryRetention:
        """``"30 runs"`` or ``"90 days"`` (a positive whole number, then runs or days)."""
        match = _SPEC_RE.match(text) if isinstance(text, str) else None
        if match is None or int(match[1]) < 1:
            raise WarehouseError(
                f"{label} must be a positive whole number of runs or days, such as '30 runs' "
                f"or '90 days' (leave it unset to keep all history), got {text!r}."
            )
        count = int(match[1])
        return cls(runs=count) if match[2].startswith("run") else cls(days=count)

    def __str__(self) -> str:
        return f"{self.runs} runs" if self.runs is not None else f"{self.days} days"


def _runs_to_drop(
    conn: duckdb.DuckDBPyConnection, target: Target, retention: HistoryRetention, now: datetime
) -> list[str]:
    """The source's logged runs that ``retention`` no longer keeps."""
    age = "coalesce(created_at, loaded_at)"
    if retention.runs is not None:
        rows = conn.execute(
            f"SELECT run_id FROM {target.runs} WHERE source = ? "
            f"ORDER BY {age} DESC NULLS LAST, loaded_at DESC, run_id DESC OFFSET ?",
            [target.source, retention.runs],
        ).fetchall()
    else:
        rows = conn.execute(
            f"SELECT run_id FROM {target.runs} WHERE source = ? "
            f"AND {age} < ?::TIMESTAMPTZ - to_days(?)",
            [target.source, now, retention.days],
        ).fetchall()
    return [str(r[0]) for r in rows]


def apply_retention(
    conn: duckdb.DuckDBPyConnection,
    target: Target,
    cols: Mapping[str, _Type] | None,
    retention: HistoryRetention,
    now: datetime,
) -> tuple[str, ...]:
    """Drop the runs ``retention`` no longer keeps; their ids, oldest last."""
    dropped = _runs_to_drop(conn, target, retention, now)
    if not dropped:
        return ()
    runs = {"runs": dropped}
    in_runs = "run_id IN (SELECT unnest($runs::VARCHAR[]))"
    if cols is not None:
        conn.execute(f"DELETE FROM {target.captures} WHERE {in_runs}", runs)
        rerank_keys_of_runs(conn, target, cols, dropped)
    conn.execute(f"DELETE FROM {target.variants} WHERE {in_runs}", runs)
    conn.execute(
        f"DELETE FROM {target.runs} WHERE source = $source AND {in_runs}",
        {**runs, "source": target.source},
    )
    return tuple(dropped)
