"""The `captures` asset: download the export of the newest recorded run and load it into DuckDB.

No `from __future__ import annotations` here: Dagster must resolve the `dg.Config` class.
"""

import hashlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from . import warehouse
from .errors import ExtraltError, ExtraltExportError
from .models import ExportFormat, ExtraltRun
from .resource import ExtraltResource

CHECK_HAS_CAPTURES = "has_captures"
CHECK_UNIQUE_IDS = "unique_capture_ids"
CHECK_PRICES = "price_sanity"
CHECK_DRIFT = "schema_drift"
PREVIEW_COLUMNS = ("title", "brand", "min_price", "currency", "available")
#: An export folder is named after its owner (this host, this pid), so a later step can tell
#: the folder of a step that was killed (no `finally` ran) from one still in use.
EXPORT_FOLDER_PREFIX = "extralt-export-"


class ExtraltCapturesConfig(dg.Config):
    export_format: ExportFormat | None = Field(
        default=None,
        description="Export to load: parquet (the source's default) or jsonl where Parquet "
        "export is unavailable.",
    )


def build_captures_asset(
    name: str,
    *,
    run_key: dg.AssetKey,
    schema: str,
    export_format: str,
    group_name: str | None,
    retry_policy: dg.RetryPolicy | None,
    pool: str | None,
    tags: Mapping[str, str] | None,
    owners: Sequence[str] | None,
    null_price_warn_ratio: float,
    duckdb_memory_limit: str | None,
    preserve_insertion_order: bool,
    lock_timeout_seconds: float,
    export_dir: str | None = None,
) -> dg.AssetsDefinition:
    from .assets import captures_asset_key, latest_run_metadata

    key = captures_asset_key(name)
    target = warehouse.Target(source=name, schema=schema)
    tables = target.table_names
    check_specs = [
        dg.AssetCheckSpec(
            CHECK_HAS_CAPTURES,
            asset=key,
            blocking=True,
            description="The Extralt run produced at least one capture.",
        ),
        dg.AssetCheckSpec(
            CHECK_UNIQUE_IDS, asset=key, description="No capture id repeats within the run."
        ),
        dg.AssetCheckSpec(
            CHECK_PRICES,
            asset=key,
            description=f"At most {null_price_warn_ratio:.0%} of captures lack min_price or have "
            "min_price > max_price.",
        ),
        dg.AssetCheckSpec(
            CHECK_DRIFT, asset=key, description="The export's columns match the previous load's."
        ),
    ]
    settings: dict[str, Any] = {"preserve_insertion_order": preserve_insertion_order}
    if duckdb_memory_limit:
        settings["memory_limit"] = duckdb_memory_limit

    @dg.asset(
        key=key,
        deps=[run_key],
        description=(
            f"Captures of source `{name}` in DuckDB: history `{tables['captures']}`, latest "
            f"products `{tables['products']}` (view), flat variants `{tables['variants']}`, and "
            f"the run log `{tables['runs']}`. Materializing alone reloads the newest recorded "
            "run without spending credits."
        ),
        group_name=group_name,
        retry_policy=retry_policy,
        pool=pool,
        tags=dict(tags or {}),
        owners=list(owners or []),
        kinds={"extralt", "duckdb"},
        check_specs=check_specs,
    )
    def _captures(
        context: dg.AssetExecutionContext,
        config: ExtraltCapturesConfig,
        extralt: ExtraltResource,
        duckdb: DuckDBResource,
    ) -> dg.MaterializeResult:
        recorded = latest_run_metadata(context.instance, name)
        if recorded is None or "extralt/run_id" not in recorded:
            raise dg.Failure(
                description=(
                    f"No Extralt run has been materialized for source {name!r} yet. Materialize "
                    f"{run_key.to_user_string()} first; no table was changed."
                ),
                allow_retries=False,
            )
        run = ExtraltRun.from_api(recorded["extralt/run_document"])
        fmt = ExportFormat(config.export_format or export_format).value
        client = extralt.get_client()
        base = Path(export_dir or tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        for orphan in remove_orphaned_export_folders(base):
            context.log.warning(f"Removed {orphan}, left behind by a killed step.")
        with tempfile.TemporaryDirectory(prefix=_export_folder_prefix(), dir=base) as tmp:
            context.log.info(f"Downloading the {fmt} export of Extralt run {run.id} into {tmp}")
            started = time.monotonic()
            try:
                path = client.download_export(run.id, tmp, fmt)
            except ExtraltExportError as exc:
                raise dg.Failure(
                    description=f"Export of Extralt run {run.id} is unusable: {exc} "
                    "No table was changed.",
                    allow_retries=True,
                ) from None
            except ExtraltError as exc:
                raise dg.Failure(
                    description=f"Export of Extralt run {run.id} could not be downloaded: {exc} "
                    "No table was changed.",
                    allow_retries=True,
                ) from None
            download_seconds = time.monotonic() - started
            size = path.stat().st_size
            context.log.info(
                f"Downloaded {size:,} bytes of {fmt} for Extralt run {run.id} "
                f"in {download_seconds:.1f}s"
            )
            record = warehouse.RunRecord.from_run(run, dagster_run_id=context.run.run_id)
            result = _load(duckdb, path, target, record, fmt, size, settings, lock_timeout_seconds)
        context.log.info(
            f"Loaded {result.rows:,} captures of run {run.id} into {tables['captures']} "
            f"in {result.load_seconds:.1f}s"
        )
        return dg.MaterializeResult(
            metadata=_metadata(duckdb.database, target, result, size, download_seconds),
            check_results=_check_results(result, null_price_warn_ratio),
        )

    return _captures


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _export_folder_prefix() -> str:
    return f"{EXPORT_FOLDER_PREFIX}{_host_tag()}-{os.getpid()}-"


def export_folder_owner(folder: Path) -> tuple[str, int] | None:
    """(host tag, pid) of the step that made an export folder, read from its name."""
    if not folder.name.startswith(EXPORT_FOLDER_PREFIX):
        return None
    host, _, rest = folder.name.removeprefix(EXPORT_FOLDER_PREFIX).partition("-")
    pid = rest.partition("-")[0]
    return (host, int(pid)) if pid.isdigit() else None


def remove_orphaned_export_folders(base: Path) -> list[Path]:
    """Remove export folders whose step died without cleaning up (SIGKILL, OOM killer).

    Only this host's folders are judged, and only those whose process is gone: a folder in use
    by a live step, or by another machine sharing `export_dir`, is never touched.
    """
    host = _host_tag()
    removed = []
    for folder in base.glob(f"{EXPORT_FOLDER_PREFIX}*"):
        owner = export_folder_owner(folder)
        if owner is None or owner[0] != host or not folder.is_dir() or _alive(owner[1]):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # somebody else's live process
    return True


def _load(
    duckdb: DuckDBResource,
    path: Path,
    target: "warehouse.Target",
    record: "warehouse.RunRecord",
    fmt: str,
    size: int,
    settings: dict[str, Any],
    lock_timeout_seconds: float,
) -> "warehouse.LoadResult":
    config = {**(duckdb.connection_config or {}), **settings}
    try:
        conn = warehouse.connect(
            duckdb.database, config=config, lock_timeout_seconds=lock_timeout_seconds
        )
    except warehouse.WarehouseLockedError as exc:
        raise dg.Failure(description=f"Extralt run {record.run_id} was not loaded: {exc}") from None
    try:
        return warehouse.load_export(
            conn, path, target=target, run=record, format=fmt, bytes_downloaded=size
        )
    except warehouse.WarehouseSchemaError as exc:
        raise dg.Failure(
            description=f"Extralt run {record.run_id} was not loaded: {exc}", allow_retries=False
        ) from None
    finally:
        conn.close()


def _metadata(
    database: str,
    target: "warehouse.Target",
    result: "warehouse.LoadResult",
    size: int,
    download_seconds: float,
) -> dict[str, Any]:
    uri = database if database.startswith("md:") else f"duckdb://{Path(database).resolve()}"
    return {
        "dagster/row_count": result.rows,
        "dagster/table_name": target.table_names["captures"],
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name=n, type=t) for n, t in result.column_types]
        ),
        "dagster/uri": uri,
        "extralt/run_id": result.run_id,
        "extralt/history_rows": result.history_rows,
        "extralt/products": result.products,
        "extralt/variants": result.variants,
        "extralt/variants_in_run": result.variants_for_run,
        "extralt/bytes_downloaded": size,
        "extralt/download_seconds": round(download_seconds, 3),
        "extralt/load_seconds": round(result.load_seconds, 3),
        "extralt/columns_added": ", ".join(result.columns_added) or "none",
        "extralt/columns_missing": ", ".join(result.columns_missing) or "none",
        "extralt/tables": dg.MetadataValue.md(
            "\n".join(f"- {kind}: `{t}`" for kind, t in target.table_names.items())
        ),
        "extralt/preview": dg.MetadataValue.md(_preview_markdown(result.preview)),
    }


def _preview_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "_no rows_"
    header = "| " + " | ".join(PREVIEW_COLUMNS) + " |"
    rule = "|" + "---|" * len(PREVIEW_COLUMNS)
    lines = [header, rule]
    for row in rows:
        cells = [str(row.get(c, "")).replace("|", "\\|")[:80] for c in PREVIEW_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _check_results(
    result: "warehouse.LoadResult", null_price_warn_ratio: float
) -> list[dg.AssetCheckResult]:
    bad_prices = result.null_price_rows + result.inverted_price_rows
    ratio = bad_prices / result.rows if result.rows else 0.0
    drift = result.drifted
    return [
        dg.AssetCheckResult(
            check_name=CHECK_HAS_CAPTURES,
            passed=result.rows > 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"rows": result.rows, "run_id": result.run_id},
            description=None if result.rows else f"Extralt run {result.run_id} has no captures.",
        ),
        dg.AssetCheckResult(
            check_name=CHECK_UNIQUE_IDS,
            passed=result.duplicate_ids == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"duplicate_ids": result.duplicate_ids},
        ),
        dg.AssetCheckResult(
            check_name=CHECK_PRICES,
            passed=ratio <= null_price_warn_ratio,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "null_min_price": result.null_price_rows,
                "min_above_max": result.inverted_price_rows,
                "bad_ratio": round(ratio, 4),
                "threshold": null_price_warn_ratio,
            },
        ),
        dg.AssetCheckResult(
            check_name=CHECK_DRIFT,
            passed=not drift,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "columns_added": ", ".join(result.columns_added) or "none",
                "columns_missing": ", ".join(result.columns_missing) or "none",
            },
        ),
    ]
