"""The `captures` asset: download the export of the newest recorded run (or of the run its
config names) and load it into DuckDB.

No `from __future__ import annotations` here: Dagster must resolve the `dg.Config` class.
"""

import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import dagster as dg
from duckdb import DuckDBPyConnection
from duckdb import Error as DuckDBError
from pydantic import Field

from .. import warehouse
from ..api.client import ExtraltClient
from ..api.errors import (
    ExtraltAPIError,
    ExtraltConnectionError,
    ExtraltError,
    ExtraltExportError,
    ExtraltNotFoundError,
    ExtraltRateLimitError,
    ExtraltServerError,
)
from ..api.models import EXPORT_FORMATS, ExportFormat, ExtraltRun, RunStatus
from ..freshness import DEFAULT_CRAWL_MARGIN, freshness_policy
from ..lake import WarehouseAt, warehouse_at
from ..naming import (
    EXPORT_DAMAGE_KEY,
    captures_asset_key,
    metadata_key,
    run_asset_key,
    run_ids_tag,
)
from ..resource import ExtraltResource
from ..spec import DEFAULT_TIMEZONE, LoadOptions, SourceSpec
from .checks import check_results, check_specs
from .metadata import (
    RunMaterialization,
    captures_metadata,
    latest_run_materialization,
    typed_text,
)

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
    run_id: str | None = Field(
        default=None,
        description="Load this Extralt run (e.g. one started from the Extralt dashboard or by "
        "an Extralt schedule) instead of the run asset's newest: it must be a completed run "
        "of the source's robot. Costs no credits: nothing is created, stopped or restarted.",
    )


#: Where the loaded run came from, in the captures asset's metadata (`extralt/run_from`).
RUN_FROM_CONFIG = "run config"
#: The docs give no format for Extralt's run ids, so a run id is not checked against one: only
#: what is surely something else, pasted by mistake, is refused before any request: a robot id
#: (the docs' `rbt_abc123`) or a Dagster run id (a UUID). Any other id the API itself judges.
ROBOT_ID_PREFIX = "rbt_"
_DAGSTER_RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def build_captures_asset(
    spec: SourceSpec,
    load: LoadOptions,
    *,
    retry_policy: dg.RetryPolicy | None,
    pool: str | None,
) -> dg.AssetsDefinition:
    """The `extralt/<name>/captures` asset of a checked spec, with its checks."""
    key = captures_asset_key(spec.name)
    target = warehouse.Target(source=spec.name, schema=load.schema)
    tables = target.table_names

    @dg.asset(
        key=key,
        deps=[run_asset_key(spec.name)],
        description=(
            f"Captures of source `{spec.name}` in DuckDB: history `{tables['captures']}`, latest "
            f"products `{tables['products']}`, flat variants `{tables['variants']}`, and "
            f"the run log `{tables['runs']}`. Materializing alone reloads the newest recorded "
            "run without spending credits; `run_id` in its run config loads a chosen run instead."
        ),
        group_name=spec.group,
        retry_policy=retry_policy,
        pool=pool,
        tags=dict(spec.tags or {}),
        owners=list(spec.owners or []),
        kinds={"extralt", "duckdb"},
        check_specs=check_specs(key, load.null_price_warn_ratio),
        freshness_policy=freshness_policy(
            spec.cron,
            spec.timezone or DEFAULT_TIMEZONE,
            spec.freshness,
            crawl_margin=timedelta(seconds=spec.poll_timeout_seconds)
            if spec.poll_timeout_seconds
            else DEFAULT_CRAWL_MARGIN,
        ),
    )
    def _captures(
        context: dg.AssetExecutionContext,
        config: ExtraltCapturesConfig,
        extralt: ExtraltResource,
        # A DuckDBResource or a DuckLakeResource: `warehouse_at` reads either.
        duckdb: dg.ResourceParam[Any],
    ) -> dg.MaterializeResult:
        return _materialize(
            context, config, extralt, warehouse_at(duckdb), target, load, spec.robot_id
        )

    return _captures


def _materialize(
    context: dg.AssetExecutionContext,
    config: ExtraltCapturesConfig,
    extralt: ExtraltResource,
    where: WarehouseAt,
    target: "warehouse.Target",
    load: LoadOptions,
    robot_id: str,
) -> dg.MaterializeResult:
    """One attempt: the recorded (or chosen) run's export, downloaded into a folder of its own,
    loaded."""
    chosen_id = _checked_run_id(config.run_id)
    if chosen_id is None:
        recorded = _recorded_run(context.instance, target.source, context.run.run_id)
        run, origin = recorded.run, recorded.origin
        run_from = run_asset_key(target.source).to_user_string()
    chosen = config.export_format.value.lower() if config.export_format else load.export_format
    fmt = ExportFormat(chosen).value
    client = extralt.get_client()
    if chosen_id is not None:
        run = _chosen_run(client, chosen_id, robot_id, target.source)
        run_from = RUN_FROM_CONFIG
        origin = _origin(context.instance, target.source, run.id)
        context.log.info(
            f"Loading Extralt run {run.id} of robot {robot_id}, chosen in run config "
            f"(started by {'Dagster' if origin == 'dagster' else 'Extralt'})"
        )
    base = Path(load.export_dir or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    for orphan in remove_orphaned_export_folders(base):
        context.log.warning(f"Removed {orphan}, left behind by a killed step.")
    with tempfile.TemporaryDirectory(prefix=_export_folder_prefix(), dir=base) as tmp:
        path, size, download_seconds = _download(context, client, run.id, fmt, tmp)
        record = warehouse.RunRecord.from_run(run, dagster_run_id=context.run.run_id, origin=origin)
        result = _load(where, path, target, record, fmt, size, load)
    _log_load(context, result, target, where.name)
    return dg.MaterializeResult(
        metadata={
            **captures_metadata(where.uri, target, result, size, download_seconds),
            metadata_key("run_from"): run_from,
            metadata_key("origin"): origin,
        },
        check_results=check_results(result, load.null_price_warn_ratio),
    )


def _recorded_run(
    instance: dg.DagsterInstance, name: str, dagster_run_id: str
) -> RunMaterialization:
    """The Extralt run of the source's `run` materialization in this Dagster run (or its
    nearest ancestor), else of its newest one; none is a clear failure."""
    recorded = latest_run_materialization(instance, name, dagster_run_id)
    if recorded is None:
        raise dg.Failure(
            description=(
                f"No Extralt run has been materialized for source {name!r} yet in this "
                f"Dagster instance. Materialize {run_asset_key(name).to_user_string()} first; "
                f"no table was changed. {_other_instance_hint()}"
            ),
            allow_retries=False,
        )
    return recorded


def _checked_run_id(value: str | None) -> str | None:
    """`run_id` of the run config, checked before any request; None when not given."""
    if value is None:
        return None
    if not value.strip():
        raise dg.Failure(
            description="run_id in the captures asset's run config is empty: give the id of "
            "an Extralt run such as 'run_abc123', or leave run_id out to load the run asset's "
            "newest run. No request was sent and no table was changed.",
            allow_retries=False,
        )
    mistaken = (
        "a robot id"
        if value.startswith(ROBOT_ID_PREFIX)
        else "a Dagster run id"
        if _DAGSTER_RUN_ID.fullmatch(value)
        else None
    )
    if mistaken or value != value.strip() or any(c.isspace() or c in "/?#" for c in value):
        what = f"looks like {mistaken}" if mistaken else "has a space, '/', '?' or '#'"
        raise dg.Failure(
            description=f"run_id in the captures asset's run config must be the id of an "
            f"Extralt run (the `id` of `GET /runs`, on the run's page in Extralt), and {value!r} "
            f"{what}. No request was sent and no table was changed.",
            allow_retries=False,
        )
    return value


def _origin(instance: dg.DagsterInstance, name: str, run_id: str) -> str:
    """`dagster` when a Dagster run of the source followed this Extralt run (the run asset's
    `extralt/<name>.run_ids` tag, restarted runs included), else `extralt`: Extralt's own
    schedules or a person on its dashboard started it."""
    tags = instance.get_run_tags(tag_keys=[run_ids_tag(name)])
    followed = any(run_id in value.split(",") for _, values in tags for value in values)
    return "dagster" if followed else "extralt"


def _chosen_run(client: ExtraltClient, run_id: str, robot_id: str, name: str) -> ExtraltRun:
    """The run `run_id` names, if it is a completed run of the source's robot; else a failure
    that says why, before any download and any table change."""
    unchanged = "Nothing was downloaded and no table was changed."
    try:
        run = client.get_run(run_id)
    except ExtraltNotFoundError:
        raise dg.Failure(
            description=f"Extralt run {run_id} (run_id in the run config) does not exist for "
            f"this API key. {unchanged}",
            allow_retries=False,
        ) from None
    except ExtraltError as exc:
        retry = _download_may_heal(exc)
        raise dg.Failure(
            description=f"Extralt run {run_id} could not be looked up: {exc} {unchanged}",
            allow_retries=retry,
        ) from None
    if run.robot_id != robot_id:
        owner = f"robot {run.robot_id}" if run.robot_id else "no robot the run document names"
        raise dg.Failure(
            description=f"Extralt run {run_id} (run_id in the run config) belongs to {owner}, "
            f"not to robot {robot_id} of source {name!r}: it is not loaded into this source's "
            f"tables. {unchanged}",
            allow_retries=False,
        )
    if run.status != RunStatus.COMPLETED:
        raise dg.Failure(
            description=f"Extralt run {run_id} (run_id in the run config) is {run.status.value}, "
            f"not completed: only a completed run is loaded. {unchanged}",
            allow_retries=False,
        )
    return run


def _download(
    context: dg.AssetExecutionContext, client: ExtraltClient, run_id: str, fmt: str, tmp: str
) -> tuple[Path, int, float]:
    """The export file, its size and the seconds its download took; failures say if a retry
    can help."""
    context.log.info(f"Downloading the {fmt} export of Extralt run {run_id} into {tmp}")
    started = time.monotonic()
    try:
        path = client.download_export(run_id, tmp, fmt)
    except ExtraltExportError as exc:
        # The body arrived whole by HTTP's framing (a cut one is a connection error), so the
        # server sent these very bytes: a step retry would download them again.
        raise dg.Failure(
            description=f"Export of Extralt run {run_id} is unusable: {exc} "
            "No table was changed. Downloading it again in this run would get the same "
            "file, so the step is not retried; materialize the captures asset alone "
            "later to download it afresh (no credits).",
            allow_retries=False,
        ) from None
    except ExtraltError as exc:
        retry = _download_may_heal(exc)
        raise dg.Failure(
            description=f"Export of Extralt run {run_id} could not be downloaded: {exc} "
            "No table was changed."
            + ("" if retry else " This fails the same way on every attempt."),
            allow_retries=retry,
        ) from None
    seconds = time.monotonic() - started
    size = path.stat().st_size
    context.log.info(
        f"Downloaded {size:,} bytes of {fmt} for Extralt run {run_id} in {seconds:.1f}s"
    )
    return path, size, seconds


def _log_load(
    context: dg.AssetExecutionContext,
    result: "warehouse.LoadResult",
    target: "warehouse.Target",
    database: str,
) -> None:
    """What the load did, and what the user may want to act on."""
    run_id, history = result.run_id, target.table_names["captures"]
    snapshot = "" if result.snapshot_id is None else f" (lake snapshot {result.snapshot_id})"
    context.log.info(
        f"Loaded {result.rows:,} captures of run {run_id} into {history} "
        f"in {result.load_seconds:.1f}s{snapshot}"
    )
    if result.columns_ignored:
        context.log.warning(
            f"The export of run {run_id} has columns named like the loader's own or "
            f"DuckDB's ({', '.join(result.columns_ignored)}): they were not loaded. "
            "Rename them upstream to keep their values."
        )
    if result.columns_typed:
        context.log.info(
            f"Columns that held no value until now got their type: {typed_text(result)}"
        )
    if result.unconverted_extracted_at:
        context.log.warning(
            f"{result.unconverted_extracted_at:,} captures of run {run_id} have an "
            "extracted_at that is no instant (NaN, infinite, out of range): history keeps "
            "the value, variants have NULL, and the products table ranks them oldest."
        )
    if result.catalog is not None and result.catalog.lower() == target.schema.lower():
        context.log.warning(
            f"DuckDB names the catalog of {database!r} after the file: "
            f"{result.catalog!r}, the same name as the schema. Loads work, but readers "
            f"must write {result.catalog}.{history}: a plain "
            f"{history} is ambiguous to DuckDB. Rename the file (the default "
            "is data/warehouse.duckdb) or choose another schema."
        )


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


def _connect(where: WarehouseAt, load: LoadOptions, run_id: str) -> DuckDBPyConnection:
    """A connection to the warehouse with the source's DuckDB settings over the resource's."""
    settings: dict[str, Any] = {"preserve_insertion_order": load.preserve_insertion_order}
    if load.duckdb_memory_limit:
        settings["memory_limit"] = load.duckdb_memory_limit
    config = {**where.config, **settings}
    try:
        return warehouse.connect(
            where.database, config=config, lock_timeout_seconds=load.lock_timeout_seconds
        )
    except warehouse.WarehouseLockedError as exc:
        # Transient: the holder may be gone by the next attempt of the RetryPolicy.
        raise dg.Failure(
            description=f"Extralt run {run_id} was not loaded: {exc}", allow_retries=True
        ) from None
    except warehouse.WarehouseError as exc:  # the lake cannot be attached
        raise dg.Failure(
            description=f"Extralt run {run_id} was not loaded: {exc} No table was changed.",
            allow_retries=exc.retryable,
        ) from None
    except DuckDBError as exc:  # DuckDB cannot open the file: not a DuckDB file, permissions
        raise dg.Failure(
            description=f"Extralt run {run_id} was not loaded: DuckDB cannot open "
            f"{where.name!r} for writing, and would fail the same way on a retry. No table "
            f"was changed. DuckDB said: {exc}",
            allow_retries=False,
        ) from None


def _load(
    where: WarehouseAt,
    path: Path,
    target: "warehouse.Target",
    record: "warehouse.RunRecord",
    fmt: str,
    size: int,
    load: LoadOptions,
) -> "warehouse.LoadResult":
    conn = _connect(where, load, record.run_id)
    try:
        return warehouse.load_export(
            conn,
            path,
            target=target,
            run=record,
            format=fmt,
            bytes_downloaded=size,
            history_retention=load.history_retention,
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
            metadata={EXPORT_DAMAGE_KEY: exc.location or "unknown"},
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
