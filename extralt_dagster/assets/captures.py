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
from enum import Enum
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource
from duckdb import Error as DuckDBError
from pydantic import Field

from .. import warehouse
from ..api.errors import (
    ExtraltAPIError,
    ExtraltConnectionError,
    ExtraltError,
    ExtraltExportError,
    ExtraltRateLimitError,
    ExtraltServerError,
)
from ..api.models import EXPORT_FORMATS, ExportFormat, ExtraltRun
from ..naming import captures_asset_key
from ..resource import ExtraltResource
from .metadata import latest_run_metadata

CHECK_HAS_CAPTURES = "has_captures"
CHECK_UNIQUE_IDS = "unique_capture_ids"
CHECK_PRICES = "price_sanity"
CHECK_DRIFT = "schema_drift"
CHECK_RUN_COUNT = "matches_run_count"
CHECK_EXTRACTED_AT = "valid_extracted_at"
PREVIEW_COLUMNS = ("title", "brand", "min_price", "currency", "available")
#: An export folder is named after its owner (this host, this pid), so a later step can tell
#: the folder of a step that was killed (no `finally` ran) from one still in use.
EXPORT_FOLDER_PREFIX = "extralt-export-"


#: `export_format` in run config: the lower-case names users write, and the upper-case ones
#: (the names of `ExportFormat`'s members) that earlier versions accepted.
ExportFormatChoice = Enum(
    "ExportFormatChoice",
    [(f, f) for f in EXPORT_FORMATS] + [(f.upper(), f.upper()) for f in EXPORT_FORMATS],
    module=__name__,
)


class ExtraltCapturesConfig(dg.Config):
    export_format: ExportFormatChoice | None = Field(
        default=None,
        description="Export to load: parquet (the source's default) or jsonl where Parquet "
        "export is unavailable. Upper case (PARQUET, JSONL) works too.",
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
            CHECK_DRIFT,
            asset=key,
            description="The export's columns and nested fields match the previous load's.",
        ),
        dg.AssetCheckSpec(
            CHECK_RUN_COUNT,
            asset=key,
            description="The export holds every capture the Extralt run says it extracted "
            "(distinct capture ids against the run's `extracted`).",
        ),
        dg.AssetCheckSpec(
            CHECK_EXTRACTED_AT,
            asset=key,
            description="Every capture's extracted_at is an instant (not NaN, infinite or out "
            "of range); history keeps any other value, variants have NULL for it.",
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
                    f"No Extralt run has been materialized for source {name!r} yet in this "
                    f"Dagster instance. Materialize {run_key.to_user_string()} first; no table "
                    f"was changed. {_other_instance_hint()}"
                ),
                allow_retries=False,
            )
        run = ExtraltRun.from_api(recorded["extralt/run_document"])
        chosen = config.export_format.value.lower() if config.export_format else export_format
        fmt = ExportFormat(chosen).value
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
                # The body arrived whole by HTTP's framing (a cut one is a connection error),
                # so the server sent these very bytes: a step retry would download them again.
                raise dg.Failure(
                    description=f"Export of Extralt run {run.id} is unusable: {exc} "
                    "No table was changed. Downloading it again in this run would get the same "
                    "file, so the step is not retried; materialize the captures asset alone "
                    "later to download it afresh (no credits).",
                    allow_retries=False,
                ) from None
            except ExtraltError as exc:
                retry = _download_may_heal(exc)
                raise dg.Failure(
                    description=f"Export of Extralt run {run.id} could not be downloaded: {exc} "
                    "No table was changed."
                    + ("" if retry else " This fails the same way on every attempt."),
                    allow_retries=retry,
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
        if result.columns_ignored:
            context.log.warning(
                f"The export of run {run.id} has columns named like the loader's own or "
                f"DuckDB's ({', '.join(result.columns_ignored)}): they were not loaded. "
                "Rename them upstream to keep their values."
            )
        if result.columns_typed:
            typed = ", ".join(f"{n} ({old} -> {new})" for n, old, new in result.columns_typed)
            context.log.info(f"Columns that held no value until now got their type: {typed}")
        if result.unconverted_extracted_at:
            context.log.warning(
                f"{result.unconverted_extracted_at:,} captures of run {run.id} have an "
                "extracted_at that is no instant (NaN, infinite, out of range): history keeps "
                "the value, variants have NULL, and the products view ranks them oldest."
            )
        if result.catalog is not None and result.catalog.lower() == schema.lower():
            context.log.warning(
                f"DuckDB names the catalog of {duckdb.database!r} after the file: "
                f"{result.catalog!r}, the same name as the schema. Loads work, but readers "
                f"must write {result.catalog}.{tables['captures']}: a plain "
                f"{tables['captures']} is ambiguous to DuckDB. Rename the file (the default "
                "is data/warehouse.duckdb) or choose another schema."
            )
        return dg.MaterializeResult(
            metadata=_metadata(duckdb.database, target, result, size, download_seconds),
            check_results=_check_results(result, null_price_warn_ratio),
        )

    return _captures


def _other_instance_hint() -> str:
    """Why a run that was materialized may be unknown here: another Dagster instance."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return (
            "If you did materialize it, the likely cause is a different Dagster instance: "
            "DAGSTER_HOME is not set here, so this command runs in a temporary instance that "
            "knows no earlier run and is removed when it ends (the UI never shows it). Export "
            "the DAGSTER_HOME that `make dev` and the UI use, e.g. `export "
            'DAGSTER_HOME=$PWD/.dagster_home`, in every shell (README, "With a real Extralt '
            'account"), then materialize again.'
        )
    return (
        "If you did materialize it, the likely cause is a different Dagster instance: this one "
        f"is DAGSTER_HOME={home}, and a command run without DAGSTER_HOME, or with another one, "
        "records its runs elsewhere (a shell without it uses a temporary instance). Export the "
        'same DAGSTER_HOME in every shell and for the UI (README, "With a real Extralt '
        'account").'
    )


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
        # Transient: the holder may be gone by the next attempt of the RetryPolicy.
        raise dg.Failure(
            description=f"Extralt run {record.run_id} was not loaded: {exc}", allow_retries=True
        ) from None
    except DuckDBError as exc:  # DuckDB cannot open the file: not a DuckDB file, permissions
        raise dg.Failure(
            description=f"Extralt run {record.run_id} was not loaded: DuckDB cannot open "
            f"{duckdb.database!r} for writing, and would fail the same way on a retry. No table "
            f"was changed. DuckDB said: {exc}",
            allow_retries=False,
        ) from None
    try:
        return warehouse.load_export(
            conn, path, target=target, run=record, format=fmt, bytes_downloaded=size
        )
    except warehouse.WarehouseSchemaError as exc:
        raise dg.Failure(
            description=f"Extralt run {record.run_id} was not loaded: {exc}", allow_retries=False
        ) from None
    except warehouse.WarehouseExportError as exc:
        # The same bytes fail the same way: a step retry would only repeat the download. The
        # next materialization downloads the export afresh.
        raise dg.Failure(
            description=f"Extralt run {record.run_id} was not loaded: {exc}",
            metadata={"extralt/export_damage": exc.location or "unknown"},
            allow_retries=False,
        ) from None
    except warehouse.WarehouseError as exc:
        # Binder and catalog errors (an object of ours replaced by hand), bad arguments: the
        # same on every attempt. I/O errors and transaction conflicts may heal.
        raise dg.Failure(
            description=f"Extralt run {record.run_id} was not loaded: {exc}",
            allow_retries=exc.retryable,
        ) from None
    finally:
        conn.close()


def _download_may_heal(exc: ExtraltError) -> bool:
    """Whether downloading again may succeed: a dropped connection, a 429 or a 5xx past the
    client's own retries may heal; a 4xx (bad key, unknown run, no access) never does."""
    if isinstance(exc, ExtraltRateLimitError | ExtraltServerError | ExtraltConnectionError):
        return True
    if isinstance(exc, ExtraltAPIError):
        return exc.status_code is None or exc.status_code >= 500
    return True


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
        "extralt/columns_ignored": ", ".join(result.columns_ignored) or "none",
        "extralt/columns_typed": ", ".join(
            f"{n} ({old} -> {new})" for n, old, new in result.columns_typed
        )
        or "none",
        "extralt/unconverted_extracted_at": result.unconverted_extracted_at,
        "extralt/columns_widened": _widened_text(result),
        "extralt/extracted": _count_or_unknown(result.extracted),
        "extralt/missing_captures": _count_or_unknown(result.missing_captures),
        "extralt/tables": dg.MetadataValue.md(
            "\n".join(f"- {kind}: `{t}`" for kind, t in target.table_names.items())
        ),
        "extralt/preview": dg.MetadataValue.md(_preview_markdown(result.preview)),
    }


def _widened_text(result: "warehouse.LoadResult") -> str:
    return ", ".join(f"{p} ({old} -> {new})" for p, old, new in result.columns_widened) or "none"


def _count_or_unknown(value: int | None) -> int | str:
    """Metadata values have one type per key: a count, or "unknown" for a run document
    without `extracted`."""
    return "unknown" if value is None else value


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
                "columns_widened": _widened_text(result),
            },
        ),
        _run_count_check(result),
        dg.AssetCheckResult(
            check_name=CHECK_EXTRACTED_AT,
            passed=result.unconverted_extracted_at == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"unconverted": result.unconverted_extracted_at, "rows": result.rows},
            description=(
                f"{result.unconverted_extracted_at} of {result.rows} captures have an "
                "extracted_at that is no instant; their variants have NULL extracted_at."
                if result.unconverted_extracted_at
                else None
            ),
        ),
    ]


def _run_count_check(result: "warehouse.LoadResult") -> dg.AssetCheckResult:
    """ERROR, not blocking: the captures that arrived are real and stay loaded, and products
    keep each missing product's previous capture; but rows are missing, which a reload (the
    captures asset alone, no credits) may recover if the API served the export short."""
    missing = result.missing_captures
    exported = result.distinct_captures
    if missing is None:
        description = (
            f"The run document of Extralt run {result.run_id} gives no `extracted` count: "
            f"{exported} captures loaded, with nothing to reconcile them against."
        )
    elif missing:
        description = (
            f"The export of Extralt run {result.run_id} holds {exported} distinct captures, "
            f"but the run extracted {result.extracted}: {missing} are missing. The rows that "
            "arrived are loaded. Materialize the captures asset alone to download the export "
            "again (no credits); if it stays short, the export is incomplete at Extralt."
        )
    elif result.extracted is not None and exported > result.extracted:
        description = (
            f"The export of Extralt run {result.run_id} holds {exported} distinct captures, "
            f"{exported - result.extracted} more than the {result.extracted} the run reports."
        )
    else:
        description = None
    return dg.AssetCheckResult(
        check_name=CHECK_RUN_COUNT,
        passed=not missing,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "extracted": _count_or_unknown(result.extracted),
            "rows_in_export": result.rows,
            "distinct_captures": exported,
            "missing": _count_or_unknown(missing),
            "run_id": result.run_id,
        },
    )
