"""The child-process side: one contender per process. ``python -m benchmarks.contenders KIND
PARAMS_JSON OUT_JSON``.

Each contender imports what it needs first, then times its work: from the first request to the
export until its DuckDB connection is closed (a closed DuckDB file is durable: the checkpoint is
in the time). Process start and imports are outside the number for every contender alike; part
3 of the benchmark (``overhead``) measures them on purpose.
"""

# No `from __future__ import annotations`: Dagster resolves the asset's return annotation.

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import growth

SOURCE = "bench"
ROBOT = "rbt_shoes"
#: The project's test poll settings: with the emulator at 1000x a run takes milliseconds, so
#: part 3 compares Dagster with a bare script, not two sleeps.
FAST_POLL = {
    "poll_interval_seconds": 0.05,
    "initial_poll_interval_seconds": 0.01,
}


def fresh_db(path: str) -> None:
    for suffix in ("", ".wal", ".tmp"):
        p = Path(path + suffix)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _export_url(p: dict[str, Any]) -> tuple[str, dict[str, str], dict[str, str]]:
    return (
        f"{p['base_url']}/v0/extract/captures/export",
        {"run_id": p["run_id"], "format": "parquet"},
        {"Authorization": f"Bearer {p['api_key']}"},
    )


# --- The limit: a bare DuckDB copy of the file curl saved --------------------------------------


def _lake(p: dict[str, Any]) -> Any:
    """The DuckLake of ``p["lake"]`` (catalog, data path), emptied; None for a DuckDB file."""
    if not p.get("lake"):
        return None
    from extralt_dagster import warehouse

    lake = warehouse.Lake(**p["lake"])
    shutil.rmtree(Path(lake.location).parent, ignore_errors=True)
    Path(lake.location).parent.mkdir(parents=True)
    return lake


def _open(p: dict[str, Any], lake: Any) -> Any:
    """A bare DuckDB connection to the file; a lake is attached as the default catalog by
    ``warehouse.connect`` (the extensions, the catalog's options), so its floor runs under the
    warehouse's DEFAULT_SETTINGS too."""
    import duckdb

    if lake is None:
        return duckdb.connect(p["db"])
    from extralt_dagster import warehouse

    return warehouse.connect(lake)


def _bytes(p: dict[str, Any], lake: Any) -> int:
    if lake is None:
        return os.path.getsize(p["db"])
    root = Path(lake.location).parent
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def ctas(p: dict[str, Any]) -> dict[str, Any]:
    import duckdb

    fresh_db(p["db"])
    lake = _lake(p)
    literal = "'" + p["file"].replace("'", "''") + "'"
    t0, c0 = time.perf_counter(), time.process_time()
    con = _open(p, lake)
    if p.get("preserve_insertion_order") is False:
        con.execute("SET preserve_insertion_order = false")
    con.execute(f"CREATE TABLE captures AS SELECT * FROM read_parquet({literal})")
    t1 = time.perf_counter()
    if p.get("flat_offers"):
        con.execute(FLAT_OFFERS_SQL)
    con.close()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    with contextlib.closing(_open(p, lake)) as con:
        (rows,) = con.execute("SELECT count(*) FROM captures").fetchone() or (0,)
        offers = None
        if p.get("flat_offers"):
            (offers,) = con.execute("SELECT count(*) FROM offers").fetchone() or (0,)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "history_seconds": t1 - t0,
        "rows": rows,
        "offers": offers,
        "db_bytes": _bytes(p, lake),
        "duckdb": duckdb.__version__,
    }


#: The flat offers of history, in the shape of ours (one level per nesting, capture columns
#: computed once per capture, variant columns once per variant): the second table of the
#: two-table floor.
FLAT_OFFERS_SQL = """
CREATE TABLE offers AS
SELECT * EXCLUDE (_o, _capture_currency),
  _o.price.amount AS price_amount, _o.price.full_amount AS full_amount,
  coalesce(_o.price.currency, _capture_currency) AS currency,
  _o.availability.in_stock AS in_stock, _o.availability.quantity AS quantity,
  _o.condition AS condition, _o.seller AS seller, _o.seller_type AS seller_type
FROM (
  SELECT * EXCLUDE (_v), _v.id AS variant_id, _v.opt1 AS opt1, _v.opt2 AS opt2,
    _v.identifiers.gtin AS gtin, _v.identifiers.mpn AS mpn, unnest(_v.offers) AS _o
  FROM (
    SELECT product_id, group_id, url, title, brand, currency AS _capture_currency,
      to_timestamp(extracted_at) AS extracted_at, id AS capture_id, unnest(variants) AS _v
    FROM captures))
"""


def two_tables(p: dict[str, Any]) -> dict[str, Any]:
    """The floor of what the captures step writes: a bare CTAS of history from the file curl
    saved, then a bare CTAS of its flat offers, in one process, insertion order off."""
    return ctas({**p, "preserve_insertion_order": False, "flat_offers": True})


# --- Ours, without Dagster: the client and the warehouse the asset calls -----------------------


def ours_bare(p: dict[str, Any]) -> dict[str, Any]:
    """``ExtraltClient.download_export`` then ``warehouse.load_export``, as the captures asset
    calls them. With ``history_only`` the load runs with ``include_variants=False``, so the
    same transaction loads history, the run log and the view, runs the checks and commits: the
    history load on its own, through the real code."""
    import duckdb

    from extralt_dagster import warehouse
    from extralt_dagster.api.client import ExtraltClient

    fresh_db(p["db"])
    lake = _lake(p)
    client = ExtraltClient(p["api_key"], p["base_url"])
    run = client.get_run(p["run_id"])  # the asset reads this from Dagster metadata instead
    record = warehouse.RunRecord.from_run(run)
    dest = Path(tempfile.mkdtemp(prefix="export-", dir=p["export_dir"]))
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        path = client.download_export(p["run_id"], dest, "parquet")
        t1 = time.perf_counter()
        size = path.stat().st_size
        conn = warehouse.connect(lake or p["db"])
        t2 = time.perf_counter()
        result = warehouse.load_export(
            conn,
            path,
            target=warehouse.Target(SOURCE),
            run=record,
            bytes_downloaded=size,
            include_variants=not p.get("history_only"),
        )
        t3 = time.perf_counter()
        conn.close()
        t4, cpu = time.perf_counter(), time.process_time() - c0
    finally:
        shutil.rmtree(dest, ignore_errors=True)
        client.close()
    phases = dict(result.phase_seconds)
    return {
        "seconds": t4 - t0,
        "cpu_seconds": cpu,
        "download_seconds": t1 - t0,
        "connect_seconds": t2 - t1,
        "load_seconds": t3 - t2,
        "close_seconds": t4 - t3,
        "phase_seconds": phases,
        # What the phases alone would call "download + history": it leaves out the commit,
        # where DuckDB compresses and writes the rows, so it understates the history load.
        "history_by_phases_seconds": (t1 - t0)
        + (t2 - t1)
        + phases.get("prepare", 0.0)
        + phases.get("history", 0.0),
        "rows": result.rows,
        "variants": result.variants_for_run,
        "bytes": size,
        "settings": {k: str(v) for k, v in warehouse.DEFAULT_SETTINGS.items()},
        "duckdb": duckdb.__version__,
    }


# --- Ours, inside Dagster: the captures asset, materialized alone ------------------------------


def _assets(p: dict[str, Any]) -> Any:
    from extralt_dagster import build_extralt_assets

    return build_extralt_assets(SOURCE, ROBOT, budget=p["count"], export_dir=p["export_dir"])


def _resources(p: dict[str, Any], **extralt: Any) -> dict[str, Any]:
    from dagster_duckdb import DuckDBResource

    from extralt_dagster import ExtraltResource

    return {
        "extralt": ExtraltResource(api_key=p["api_key"], base_url=p["base_url"], **extralt),
        "duckdb": DuckDBResource(database=p["db"]),
    }


def _instance(home: str) -> Any:
    import dagster as dg

    Path(home).mkdir(parents=True, exist_ok=True)
    yaml = Path(home) / "dagster.yaml"
    if not yaml.exists():
        yaml.write_text("telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.from_config(home)


def _step_seconds(instance: Any, run_id: str, step_key: str | None = None) -> float:
    """STEP_START to STEP_SUCCESS of one step, from the event log's timestamps."""
    import dagster as dg

    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    types = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
    for entry in instance.all_logs(run_id, of_type=types):
        event = entry.dagster_event
        target = starts if event.event_type == dg.DagsterEventType.STEP_START else ends
        target[event.step_key] = entry.timestamp
    keys = [k for k in ends if step_key is None or step_key in k]
    if len(keys) != 1 or keys[0] not in starts:
        raise RuntimeError(f"no single step matching {step_key!r}: {sorted(ends)}")
    return ends[keys[0]] - starts[keys[0]]


def dagster_setup(p: dict[str, Any]) -> dict[str, Any]:
    """Materialize the run asset once, following the already completed Extralt run through its
    run tag (the "reuse" path): the captures asset reads that run from the instance."""
    import dagster as dg

    from extralt_dagster.naming import run_id_tag

    assets = _assets(p)
    with _instance(p["home"]) as instance:
        result = dg.materialize(
            assets,
            selection=[assets[0]],
            instance=instance,
            resources=_resources(p),
            tags={run_id_tag(SOURCE): p["run_id"]},
        )
        return {"success": result.success}


def ours_dagster(p: dict[str, Any]) -> dict[str, Any]:
    import dagster as dg

    from extralt_dagster.naming import captures_asset_key

    fresh_db(p["db"])
    assets = _assets(p)
    key = captures_asset_key(SOURCE)
    with _instance(p["home"]) as instance:
        t0, c0 = time.perf_counter(), time.process_time()
        result = dg.materialize(
            assets, selection=[assets[1]], instance=instance, resources=_resources(p)
        )
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if not result.success:
            raise RuntimeError("the captures materialization failed")
        mats = [
            e.materialization
            for e in result.all_events
            if e.is_step_materialization and e.materialization.asset_key == key
        ]
        md = {k: v.value for k, v in mats[-1].metadata.items()}
        step = _step_seconds(instance, result.run_id, "captures")
    return {
        "seconds": step,
        "step_seconds": step,
        "materialize_seconds": wall,
        "cpu_seconds": cpu,  # of the whole dg.materialize call
        "download_seconds": md["extralt/download_seconds"],
        "load_seconds": md["extralt/load_seconds"],
        "metadata_seconds": md["extralt/download_seconds"] + md["extralt/load_seconds"],
        "rows": md["dagster/row_count"],
        "variants": md["extralt/variants"],
    }


# --- What users would do instead ---------------------------------------------------------------


def _httpx_content(p: dict[str, Any]) -> bytes:
    import httpx

    url, params, headers = _export_url(p)
    response = httpx.get(url, params=params, headers=headers, timeout=600)
    response.raise_for_status()
    return response.content


def _arrow_from_http(p: dict[str, Any], laps: dict[str, float], t0: float) -> Any:
    """The export as an Arrow table, held in memory; laps "download" and "pyarrow"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    content = _httpx_content(p)
    laps["download"] = time.perf_counter() - t0
    table = pq.read_table(pa.BufferReader(content))
    del content
    laps["pyarrow"] = time.perf_counter() - t0 - sum(laps.values())
    return table


def peer_pandas(p: dict[str, Any]) -> dict[str, Any]:
    """httpx ``.content`` -> pyarrow -> pandas -> DuckDB ``CREATE TABLE AS SELECT * FROM df``."""
    import duckdb

    fresh_db(p["db"])
    laps: dict[str, float] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    table = _arrow_from_http(p, laps, t0)
    df = table.to_pandas()
    del table
    laps["pandas"] = time.perf_counter() - t0 - sum(laps.values())
    con = duckdb.connect(p["db"])
    con.register("df", df)
    con.execute("CREATE TABLE captures AS SELECT * FROM df")
    con.close()
    laps["duckdb"] = time.perf_counter() - t0 - sum(laps.values())
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": seconds, "cpu_seconds": cpu, "laps": laps, "rows": len(df)}


def peer_dlt(p: dict[str, Any]) -> dict[str, Any]:
    """dlt loading the export, read as an Arrow table, into DuckDB (dlt's defaults)."""
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    import dlt

    fresh_db(p["db"])
    pipelines = Path(p["export_dir"]) / "dlt-pipelines"
    shutil.rmtree(pipelines, ignore_errors=True)
    laps: dict[str, float] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    table = _arrow_from_http(p, laps, t0)
    rows = table.num_rows
    pipeline = dlt.pipeline(
        pipeline_name="extralt_bench",
        destination=dlt.destinations.duckdb(p["db"]),
        dataset_name="extralt",
        pipelines_dir=str(pipelines),
    )
    pipeline.run(table, table_name="captures")
    laps["dlt"] = time.perf_counter() - t0 - sum(laps.values())
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    shutil.rmtree(pipelines, ignore_errors=True)
    import duckdb

    with duckdb.connect(p["db"], read_only=True) as con:
        types = dict(
            con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'extralt' AND table_name = 'captures' "
                "AND column_name IN ('variants', 'options')"
            ).fetchall()
        )
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "laps": laps,
        "rows": rows,
        "nested_types": types,
    }


def peer_dagster_pandas(p: dict[str, Any]) -> dict[str, Any]:
    """An asset returning the export as a pandas DataFrame, stored by dagster-duckdb-pandas'
    ``DuckDBPandasIOManager``; the time is the step's, IO manager included."""
    import dagster as dg
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from dagster_duckdb_pandas import DuckDBPandasIOManager

    fresh_db(p["db"])

    @dg.asset(key=["extralt", "captures"])
    def captures() -> pd.DataFrame:
        return pq.read_table(pa.BufferReader(_httpx_content(p))).to_pandas()

    io_manager = DuckDBPandasIOManager(database=p["db"], schema="extralt")
    with _instance(p["home"]) as instance:
        t0, c0 = time.perf_counter(), time.process_time()
        result = dg.materialize([captures], instance=instance, resources={"io_manager": io_manager})
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if not result.success:
            raise RuntimeError("the pandas IO manager materialization failed")
        step = _step_seconds(instance, result.run_id)
    return {
        "seconds": step,
        "step_seconds": step,
        "materialize_seconds": wall,
        "cpu_seconds": cpu,  # of the whole dg.materialize call
    }


# --- Part 3: Dagster's overhead on one small source --------------------------------------------


def overhead_bare(p: dict[str, Any]) -> dict[str, Any]:
    """The client calls and the DuckDB load of a `run` + `captures` materialization, in a
    plain script: create, wait (same poll settings), download, load."""
    from extralt_dagster import warehouse
    from extralt_dagster.api.client import ExtraltClient
    from extralt_dagster.api.run_handler import ExtraltRunHandler, PollSettings

    fresh_db(p["db"])
    t0 = time.perf_counter()
    with ExtraltClient(p["api_key"], p["base_url"]) as client:
        run_id = client.create_run(ROBOT, None, p["count"], False)
        settings = PollSettings(
            interval_seconds=FAST_POLL["poll_interval_seconds"],
            initial_interval_seconds=FAST_POLL["initial_poll_interval_seconds"],
        )
        run = ExtraltRunHandler(client, run_id).wait(settings)
        with tempfile.TemporaryDirectory(prefix="export-", dir=p["export_dir"]) as tmp:
            path = client.download_export(run_id, tmp, "parquet")
            conn = warehouse.connect(p["db"])
            try:
                result = warehouse.load_export(
                    conn,
                    path,
                    target=warehouse.Target(SOURCE),
                    run=warehouse.RunRecord.from_run(run),
                    bytes_downloaded=path.stat().st_size,
                )
            finally:
                conn.close()
    return {"seconds": time.perf_counter() - t0, "rows": result.rows}


def overhead_inprocess(p: dict[str, Any]) -> dict[str, Any]:
    """Both assets through ``dg.materialize`` (in-process executor), persistent instance."""
    import dagster as dg

    fresh_db(p["db"])
    assets = _assets(p)
    with _instance(p["home"]) as instance:
        t0 = time.perf_counter()
        result = dg.materialize(assets, instance=instance, resources=_resources(p, **FAST_POLL))
        seconds = time.perf_counter() - t0
        if not result.success:
            raise RuntimeError("the materialization failed")
        run_step = _step_seconds(instance, result.run_id, "run")
        captures_step = _step_seconds(instance, result.run_id, "captures")
    return {
        "seconds": seconds,
        "run_step_seconds": run_step,
        "captures_step_seconds": captures_step,
    }


KINDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "ctas": ctas,
    "ours_bare": ours_bare,
    "dagster_setup": dagster_setup,
    "ours_dagster": ours_dagster,
    "peer_pandas": peer_pandas,
    "peer_dlt": peer_dlt,
    "peer_dagster_pandas": peer_dagster_pandas,
    "overhead_bare": overhead_bare,
    "two_tables": two_tables,
    "growth": growth.run,
    "overhead_inprocess": overhead_inprocess,
}


def main(argv: list[str]) -> int:
    kind, params_path, out_path = argv
    params = json.loads(Path(params_path).read_text())
    result = KINDS[kind](params)
    Path(out_path).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
