"""Warehouse targets side by side (issue 17): the load path into a DuckDB file and into a
DuckLake (SQLite catalog, local data folder), and the file on the newest DuckDB as well as the
pinned one, each as a ratio to its own floor measured in the same repetition.

A target's floor is what any load into it must do at least: curl of the export, then a bare
CTAS of history and one of its flat offers (``contenders.two_tables``) into that target, on
that DuckDB. Ours is ``download_export`` plus ``load_export`` (``contenders.ours_bare``), the
calls the captures asset makes, without Dagster (part 3 measures Dagster's overhead).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .procs import ROOT, ChildResult

#: ``make test-duckdb-newest`` puts the newest ``duckdb`` wheel here, first on PYTHONPATH for
#: the pinned environment; the "file, newest DuckDB" target runs its children that way.
NEWEST_DUCKDB = ROOT / ".venv-compat" / "duckdb-newest"
TARGET_NAMES = ("file", "ducklake", "file-newest")
LABELS = {
    "file": "DuckDB file",
    "ducklake": "DuckLake (SQLite catalog)",
    "file-newest": "DuckDB file, newest DuckDB",
}


def duckdb_version(pythonpath: Path | None) -> str | None:
    """The DuckDB a child with ``pythonpath`` first imports (None if it cannot)."""
    env = None if pythonpath is None else {"PYTHONPATH": str(pythonpath)}
    try:
        out = subprocess.run(
            [sys.executable, "-c", "import duckdb; print(duckdb.__version__)"],
            capture_output=True,
            text=True,
            timeout=60,
            env=None if env is None else {**os.environ, **env},
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def available(names: list[str], log: Callable[[str], None]) -> list[str]:
    """``names`` less those this machine cannot run, saying why."""
    out = []
    for name in names:
        if name == "file-newest":
            newest, pinned = duckdb_version(NEWEST_DUCKDB), duckdb_version(None)
            if not NEWEST_DUCKDB.is_dir() or newest is None:
                log(f"targets: skipping {name}: no {NEWEST_DUCKDB} (make test-duckdb-newest)")
                continue
            if newest == pinned:
                log(f"targets: skipping {name}: the newest DuckDB is the pinned one ({pinned})")
                continue
        out.append(name)
    return out


def params(name: str, work: Path) -> tuple[dict[str, Any], dict[str, str] | None]:
    """A target's contender parameters and child environment."""
    if name == "ducklake":
        lake = work / "lake"
        return {
            "lake": {
                "catalog": f"sqlite:{lake / 'catalog.sqlite'}",
                "data_path": str(lake / "files"),
            }
        }, None
    if name == "file-newest":
        return {}, {"PYTHONPATH": str(NEWEST_DUCKDB)}
    return {}, None


def contenders(
    names: list[str], child: Callable[..., Callable[[], ChildResult]], work: Path
) -> Iterator[tuple[str, Callable[[], ChildResult]]]:
    """Per target, its floor then ours (``child(name, kind, env=..., **params)``)."""
    for name in names:
        extra, env = params(name, work)
        yield f"{name}_two_tables", child(f"{name}_two_tables", "two_tables", env=env, **extra)
        yield f"{name}_ours", child(f"{name}_ours", "ours_bare", env=env, **extra)


def summarize(
    n: int, size: int, samples: dict[str, list[ChildResult]], names: list[str]
) -> dict[str, Any]:
    """Per target: floor and ours, seconds and the per-repetition ratio of ours to the floor."""

    def ok(key: str) -> list[ChildResult]:
        return [r for r in samples.get(key, []) if r.ok]

    curl = ok("limit_curl")
    rows: dict[str, Any] = {}
    for name in names:
        floor_runs, ours = ok(f"{name}_two_tables"), ok(f"{name}_ours")
        reps = min(len(curl), len(floor_runs), len(ours))
        if not reps:
            errors = [
                r.error
                for k in (f"{name}_two_tables", f"{name}_ours")
                for r in samples.get(k, [])
                if not r.ok
            ]
            rows[name] = {"error": "; ".join(e or "failed" for e in errors) or "not measured"}
            continue
        floor = [curl[i].wall_seconds + _seconds(floor_runs[i]) for i in range(reps)]
        mine = [_seconds(ours[i]) for i in range(reps)]
        ratios = [m / f for m, f in zip(mine, floor, strict=True)]
        rows[name] = {
            "duckdb": ours[0].data.get("duckdb"),
            "floor_seconds": _stats(floor),
            "ours_seconds": _stats(mine),
            "ratio": statistics.median(ratios),
            "ratio_max": max(ratios),
            "ours_peak_rss_mb": max(r.peak_rss_mb for r in ours[:reps]),
            "floor_bytes": floor_runs[0].data.get("db_bytes"),
            "ours_phase_seconds": {
                k: statistics.median(r.data["phase_seconds"].get(k, 0.0) for r in ours[:reps])
                for k in ours[0].data.get("phase_seconds", {})
            },
        }
    return {"captures": n, "export_bytes": size, "targets": rows}


def _seconds(result: ChildResult) -> float:
    value = result.data.get("seconds")
    return float(value) if value is not None else result.wall_seconds


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def table(results: dict[str, Any]) -> list[str]:
    sizes = results.get("warehouse_targets") or {}
    if not sizes:
        return []
    lines = [
        "Warehouse targets: download + load_export against its own floor (curl, then a bare CTAS "
        "of history and of its flat offers into the same target, same DuckDB), same repetition",
        f"  {'target':32} {'DuckDB':>7} {'captures':>9} {'floor s':>8} {'ours s':>8} "
        f"{'ours/floor':>10} {'max':>6} {'RSS MB':>7}",
    ]
    for size in sizes.values():
        for name, row in size["targets"].items():
            label = LABELS.get(name, name)
            if "error" in row:
                lines.append(f"  {label:32} {'':>7} {size['captures']:>9,} FAILED: {row['error']}")
                continue
            lines.append(
                f"  {label:32} {row.get('duckdb') or '?':>7} {size['captures']:>9,} "
                f"{row['floor_seconds']['median']:>8.2f} {row['ours_seconds']['median']:>8.2f} "
                f"{row['ratio']:>10.2f} {row['ratio_max']:>6.2f} {row['ours_peak_rss_mb']:>7,.0f}"
            )
    return lines
