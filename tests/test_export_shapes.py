"""Export shapes the docs allow, or that a real service serves, loaded or refused (issue 13,
classes 5 to 8): a run with no captures, nested drift, short exports, the run config's format,
and corrupt files. Each class in several shapes, in Parquet and JSON lines where it applies,
asserting rows, column types and metadata."""

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extralt_dagster import ExtraltClient, build_extralt_assets, warehouse
from extralt_dagster.assets.checks import (
    CHECK_DRIFT,
    CHECK_HAS_CAPTURES,
    CHECK_RUN_COUNT,
    CHECK_UNIQUE_IDS,
)
from extralt_dagster.emulator.datagen import NESTED_FIELD, write_captures
from extralt_dagster.emulator.state import Robot
from extralt_dagster.naming import captures_asset_key, run_asset_key
from extralt_dagster.warehouse import RunRecord, Target, WarehouseExportError, load_export
from tests.targets import target_fixture

from .support import failure_messages, materialization_metadata, resources

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86_400.0
SHOES = Target("shoes")
EXPORT = ("GET", "/v0/extract/captures/export")
WARRANTY = f"variants[].offers[].{NESTED_FIELD}"
FORMATS = ("parquet", "jsonl")


#: A new warehouse of each kind: a DuckDB file and a DuckLake.
conn = target_fixture()


def export(tmp_path: Path, run_id: str, count: int, *, fmt: str = "parquet", day: int = 0, **kw):
    name = f"{run_id}-{count}-{day}-{'-'.join(f'{k}{v}' for k, v in sorted(kw.items()))}.{fmt}"
    return write_captures(
        tmp_path / name, run_id=run_id, count=count, format=fmt, started_at=T0 + day * DAY, **kw
    )


def record(run_id: str, extracted: int | None = None) -> RunRecord:
    return RunRecord(run_id=run_id, robot_id="rbt_shoes", status="completed", extracted=extracted)


def load(conn, path, run_id, *, fmt="parquet", extracted=None, target=SHOES):
    return load_export(conn, path, target=target, run=record(run_id, extracted), format=fmt)


def rows_of(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return pq.read_table(path).to_pylist()


def offers_in(path: Path) -> int:
    return sum(len(v["offers"] or []) for r in rows_of(path) for v in r["variants"] or [])


def snapshot(conn, target=SHOES) -> dict:
    out = {}
    for name in ("captures", "products", "variants", "runs"):
        try:
            query = f"SELECT * FROM {getattr(target, name)} ORDER BY ALL"
            out[name] = conn.execute(query).fetchall()
        except duckdb.CatalogException:
            out[name] = None
    return out


def run_log(conn, target=SHOES) -> dict[str, tuple]:
    rows = conn.execute(
        f"SELECT run_id, rows_loaded, extracted, export_format FROM {target.runs} "
        "WHERE source = ? ORDER BY run_id",
        [target.source],
    ).fetchall()
    return {r[0]: r[1:] for r in rows}


def history_ids(conn, run_id: str, target=SHOES) -> list[str]:
    return [
        i
        for (i,) in conn.execute(
            f"SELECT id FROM {target.captures} WHERE run_id = ? ORDER BY id", [run_id]
        ).fetchall()
    ]


# --- 5. A run with no captures ------------------------------------------------------------------


def _no_columns_parquet(tmp_path: Path) -> Path:
    path = tmp_path / "no-columns.parquet"
    pq.write_table(pa.Table.from_pylist([]), path)  # what a pyarrow-based writer gives
    return path


def _typed_empty_parquet(tmp_path: Path) -> Path:
    return export(tmp_path, "typed_empty", 0)


def _bytes(name: str, data: bytes):
    def make(tmp_path: Path) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return make


EMPTY_EXPORTS = {
    "parquet with no columns": ("parquet", _no_columns_parquet),
    "parquet with columns and no rows": ("parquet", _typed_empty_parquet),
    "empty jsonl": ("jsonl", _bytes("empty.jsonl", b"")),
    "jsonl of blank lines": ("jsonl", _bytes("blank.jsonl", b"\n\n  \n")),
    "jsonl of one CRLF": ("jsonl", _bytes("crlf.jsonl", b"\r\n")),
}


@pytest.mark.parametrize("shape", EMPTY_EXPORTS)
def test_an_empty_export_is_a_logged_run_of_zero_captures(conn, tmp_path, shape):
    fmt, make = EMPTY_EXPORTS[shape]
    empty = make(tmp_path)

    # As a source's first run: nothing to load, but the run is logged.
    first = load(conn, empty, "run_0", fmt=fmt, extracted=0)
    assert (first.rows, first.history_rows, first.products, first.variants) == (0, 0, 0, 0)
    assert (first.runs_logged, first.missing_captures, first.drifted) == (1, 0, False)
    assert run_log(conn) == {"run_0": (0, 0, fmt)}
    assert warehouse.table_stats(conn, SHOES).runs == 1

    # Into a source with history: the other runs are untouched, and no drift is reported.
    full = export(tmp_path, "run_1", 30, fmt=fmt)
    loaded = load(conn, full, "run_1", fmt=fmt, extracted=30)
    assert loaded.rows == 30 and loaded.missing_captures == 0
    types_before = loaded.column_types
    before = snapshot(conn)
    again = load(conn, empty, "run_2", fmt=fmt, extracted=0)
    assert (again.rows, again.history_rows, again.products) == (0, 30, 30)
    assert again.variants == offers_in(full) and again.variants_for_run == 0
    assert again.columns_added == again.columns_missing == again.columns_widened == ()
    assert again.column_types == types_before
    after = snapshot(conn)
    assert {k: v for k, v in after.items() if k != "runs"} == {
        k: v for k, v in before.items() if k != "runs"
    }
    assert run_log(conn) == {"run_0": (0, 0, fmt), "run_1": (30, 30, fmt), "run_2": (0, 0, fmt)}

    # A reload of run_1 that comes back empty replaces its rows with none, and says so.
    emptied = load(conn, empty, "run_1", fmt=fmt, extracted=30)
    assert (emptied.rows, emptied.history_rows, emptied.variants) == (0, 0, 0)
    assert emptied.missing_captures == 30
    assert run_log(conn)["run_1"] == (0, 30, fmt)


def _empty_robot_emulator(make_emulator):
    """An emulator whose robot finds nothing: its runs complete with 0 captures."""
    return make_emulator(robots=[Robot("rbt_void", "void.example", "Void (US)", catalogue_size=0)])


def checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def materialize(assets, emulator, instance, tmp_path, selection=None, run_config=None):
    return dg.materialize(
        assets,
        instance=instance,
        resources=resources(emulator, tmp_path),
        selection=selection,
        run_config=run_config,
        raise_on_error=False,
    )


def warehouse_rows(tmp_path: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_completed_run_with_no_captures_materializes_and_fails_has_captures(
    make_emulator, instance, tmp_path, fmt
):
    """Served over HTTP as a Parquet file with no columns, or an empty JSON lines file: the
    download check accepts it, the load logs the run, and the blocking check fails (once: no
    retry, no second download)."""
    emulator = _empty_robot_emulator(make_emulator)
    emulator.set_faults(export_no_columns=True)
    assets = build_extralt_assets(
        "void",
        "rbt_void",
        export_format=fmt,
        export_dir=str(tmp_path / "exports"),
        retry_policy=dg.RetryPolicy(max_retries=2),
    )

    result = materialize(assets, emulator, instance, tmp_path)

    [run_id] = emulator.runs
    assert emulator.run(run_id).status == "completed" and emulator.run(run_id).extracted == 0
    assert emulator.count_requests(*EXPORT) == 1  # not retried
    md = materialization_metadata(result, captures_asset_key("void"))
    assert md["dagster/row_count"] == 0 and md["extralt/run_id"] == run_id
    assert md["extralt/history_rows"] == 0 and md["extralt/extracted"] == 0
    assert md["extralt/missing_captures"] == 0 and md["extralt/preview"] == "_no rows_"
    evaluations = checks(result)
    has = evaluations[CHECK_HAS_CAPTURES]
    assert not has.passed and has.severity == dg.AssetCheckSeverity.ERROR
    assert has.metadata["rows"].value == 0
    assert evaluations[CHECK_RUN_COUNT].passed  # the run says 0, the export holds 0
    assert evaluations[CHECK_UNIQUE_IDS].passed and evaluations[CHECK_DRIFT].passed
    assert warehouse_rows(
        tmp_path, "SELECT run_id, rows_loaded, extracted, export_format FROM extralt.runs"
    ) == [(run_id, 0, 0, fmt)]
    assert list((tmp_path / "exports").iterdir()) == []


# --- 6. Nested drift ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_new_nested_field_is_added_and_reported_by_path(conn, tmp_path, fmt):
    first = export(tmp_path, "run_1", 40, fmt=fmt)
    load(conn, first, "run_1", fmt=fmt)
    nested = export(tmp_path, "run_2", 30, fmt=fmt, day=1, nested_field=True)

    result = load(conn, nested, "run_2", fmt=fmt)

    assert result.columns_added == (WARRANTY,)
    assert result.columns_missing == () and result.columns_widened == ()
    assert result.drifted and result.rows == 30
    months = "BIGINT" if fmt == "jsonl" else "INTEGER"
    assert (
        f'{NESTED_FIELD} STRUCT("months" {months}, provider VARCHAR)'
        in (dict(result.column_types)["variants"])
    )
    # The new run's warranties are stored as exported; the old run's read NULL.
    stored = dict(
        conn.execute(
            f"SELECT id, list_transform(variants, lambda v: list_transform(v.offers, "
            f"lambda o: o.{NESTED_FIELD})) FROM {SHOES.captures} WHERE run_id = 'run_2'"
        ).fetchall()
    )
    exported = {
        r["id"]: [[o[NESTED_FIELD] for o in v["offers"]] for v in r["variants"]]
        for r in rows_of(nested)
    }
    assert stored == exported and all(w for ws in exported.values() for w in ws)
    [(old_warranties,)] = conn.execute(
        f"SELECT count(*) FILTER (WHERE o.{NESTED_FIELD} IS NOT NULL) FROM "
        f"(SELECT unnest(v.offers) AS o FROM (SELECT unnest(variants) AS v FROM {SHOES.captures} "
        "WHERE run_id = 'run_1'))"
    ).fetchall()
    assert old_warranties == 0
    assert result.variants_for_run == offers_in(nested)

    # Back to the documented shape: the field is now missing, by path.
    back = load(conn, export(tmp_path, "run_3", 20, fmt=fmt, day=2), "run_3", fmt=fmt)
    assert back.columns_missing == (WARRANTY,) and back.columns_added == ()
    # And the same shape again is no drift.
    same = load(
        conn, export(tmp_path, "run_4", 20, fmt=fmt, day=3, nested_field=True), "run_4", fmt=fmt
    )
    assert not same.drifted


def _rewrite(conn, src: Path, dst: Path, select: str, fmt: str) -> Path:
    """`src` rewritten by DuckDB: `select` over its rows, written as `fmt`."""
    reader = "read_parquet(?)" if src.suffix == ".parquet" else "read_json(?)"
    options = "FORMAT parquet" if fmt == "parquet" else "FORMAT json"
    conn.execute(f"COPY (SELECT {select} FROM {reader}) TO '{dst}' ({options})", [str(src)])
    return dst


NESTED_SHAPES = {
    # name: (select over the export, added, missing, widened)
    "a field new to a struct column": (
        "* REPLACE (struct_insert(options, opt3 := {'name': 'Fit', 'values': ['Wide']}) "
        "AS options)",
        ("options.opt3",),
        (),
        (),
    ),
    "a field new to variants[].identifiers": (
        "* REPLACE (list_transform(variants, lambda v: struct_update(v, identifiers := "
        "struct_insert(v.identifiers, upc := '0' || v.identifiers.gtin))) AS variants)",
        ("variants[].identifiers.upc",),
        (),
        (),
    ),
    "a field gone from variants[].identifiers": (
        "* REPLACE (list_transform(variants, lambda v: struct_update(v, identifiers := "
        "{'gtin': v.identifiers.gtin})) AS variants)",
        (),
        ("variants[].identifiers.mpn",),
        (),
    ),
    "a nested integer widened": (
        "* REPLACE (list_transform(variants, lambda v: struct_update(v, offers := "
        "list_transform(v.offers, lambda o: struct_update(o, availability := "
        "struct_update(o.availability, quantity := o.availability.quantity::BIGINT))))) "
        "AS variants)",
        (),
        (),
        (("variants[].offers[].availability.quantity", "INTEGER", "BIGINT"),),
    ),
    "a new top-level column and a new nested field at once": (
        "*, 4.5 AS rating, list_transform(variants, lambda v: struct_insert(v, weight_g := 100)) "
        "AS variants2",
        ("rating", "variants2"),
        (),
        (),
    ),
}


@pytest.mark.parametrize("shape", NESTED_SHAPES)
def test_nested_drift_of_every_kind_is_reported_by_path(conn, tmp_path, shape):
    """Parquet exports (the typed format): the drift report follows the table's change."""
    select, added, missing, widened = NESTED_SHAPES[shape]
    source = export(tmp_path, "run_1", 30)
    load(conn, source, "run_1")
    drifted = _rewrite(
        conn, export(tmp_path, "run_2", 25, day=1), tmp_path / "d.parquet", select, "parquet"
    )

    result = load(conn, drifted, "run_2")

    assert (result.columns_added, result.columns_missing, result.columns_widened) == (
        added,
        missing,
        widened,
    )
    assert result.rows == 25 and count_rows(conn, SHOES.captures) == 55
    # The history table's real type has what was added, and every row survives.
    types = dict(result.column_types)
    for path in added:
        leaf = path.rsplit(".", 1)[-1]
        assert leaf in types or f"{leaf} " in types[path.split(".")[0].split("[")[0]]
    assert result.variants == offers_in(source) + offers_in(drifted)


def count_rows(conn, relation: str, where: str = "true") -> int:
    return conn.execute(f"SELECT count(*) FROM {relation} WHERE {where}").fetchone()[0]


def test_jsonl_into_parquet_history_reports_nested_widenings_by_path(conn, tmp_path):
    load(conn, export(tmp_path, "run_1", 30), "run_1")
    result = load(conn, export(tmp_path, "run_2", 20, fmt="jsonl", day=1), "run_2", fmt="jsonl")
    # JSON has one integer type: both integers widen, each named where it is.
    assert result.columns_widened == (
        ("sku_count", "INTEGER", "BIGINT"),
        ("variants[].offers[].availability.quantity", "INTEGER", "BIGINT"),
    )
    assert result.columns_added == result.columns_missing == ()
    types = dict(result.column_types)
    assert types["sku_count"] == "BIGINT" and "quantity BIGINT" in types["variants"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_nested_drift_reaches_the_metadata_and_the_drift_check(emulator, instance, tmp_path, fmt):
    assets = build_extralt_assets(
        "shoes", "rbt_shoes", budget=20, export_format=fmt, export_dir=str(tmp_path / "exports")
    )
    assert materialize(assets, emulator, instance, tmp_path).success
    emulator.set_faults(export_nested_field=True)

    result = materialize(assets, emulator, instance, tmp_path)

    assert result.success, failure_messages(result)
    md = materialization_metadata(result, captures_asset_key("shoes"))
    assert md["extralt/columns_added"] == WARRANTY
    assert md["extralt/columns_missing"] == md["extralt/columns_widened"] == "none"
    drift = checks(result)[CHECK_DRIFT]
    assert not drift.passed and drift.severity == dg.AssetCheckSeverity.WARN
    assert drift.metadata["columns_added"].value == WARRANTY
    columns = {c.name: c.type for c in md["dagster/column_schema"].columns}
    assert f"{NESTED_FIELD} STRUCT(" in columns["variants"]
    [(with_warranty,)] = warehouse_rows(
        tmp_path,
        f"SELECT count(*) FROM (SELECT unnest(v.offers) AS o FROM (SELECT unnest(variants) AS v "
        f"FROM extralt.shoes_captures WHERE run_id = '{md['extralt/run_id']}')) "
        f"WHERE o.{NESTED_FIELD}.months > 0",
    )
    assert with_warranty == md["extralt/variants_in_run"] > 0


# --- 7. Short exports ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_short_export_counts_the_missing_captures(conn, tmp_path, fmt):
    full = export(tmp_path, "run_1", 40, fmt=fmt)
    assert load(conn, full, "run_1", fmt=fmt, extracted=40).missing_captures == 0

    # A JSON lines file cut cleanly after a line (or a Parquet export served short) is a
    # valid file: only the run's count tells.
    short = tmp_path / f"short.{fmt}"
    if fmt == "jsonl":
        short.write_text("".join(full.read_text().splitlines(keepends=True)[:31]))
    else:
        pq.write_table(pq.read_table(full).slice(0, 31), short)
    result = load(conn, short, "run_1", fmt=fmt, extracted=40)
    assert (result.rows, result.distinct_captures, result.missing_captures) == (31, 31, 9)
    assert history_ids(conn, "run_1") == sorted(r["id"] for r in rows_of(full)[:31])
    assert run_log(conn)["run_1"] == (31, 40, fmt)

    # Duplicates do not mask missing rows: 40 rows, 36 distinct ids.
    rows = rows_of(full)
    padded = rows[:36] + rows[:4]
    doubled = tmp_path / f"doubled.{fmt}"
    if fmt == "jsonl":
        doubled.write_text("".join(json.dumps(r) + "\n" for r in padded))
    else:
        pq.write_table(pa.Table.from_pylist(padded, schema=pq.read_schema(full)), doubled)
    result = load(conn, doubled, "run_1", fmt=fmt, extracted=40)
    assert (result.rows, result.duplicate_ids, result.missing_captures) == (40, 4, 4)

    # No `extracted` in the run document: nothing to reconcile against.
    assert load(conn, full, "run_1", fmt=fmt).missing_captures is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_short_export_over_http_fails_matches_run_count_and_a_reload_recovers(
    emulator, instance, tmp_path, fmt
):
    assets = build_extralt_assets(
        "shoes", "rbt_shoes", budget=30, export_format=fmt, export_dir=str(tmp_path / "exports")
    )
    emulator.set_faults(export_short_by=7)

    result = materialize(assets, emulator, instance, tmp_path)

    # Not blocking: the 23 captures that arrived are real, and loaded.
    assert result.success, failure_messages(result)
    [run_id] = emulator.runs
    assert emulator.run(run_id).extracted == 30
    md = materialization_metadata(result, captures_asset_key("shoes"))
    assert md["dagster/row_count"] == 23
    assert (md["extralt/extracted"], md["extralt/missing_captures"]) == (30, 7)
    check = checks(result)[CHECK_RUN_COUNT]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert {k: v.value for k, v in check.metadata.items()} == {
        "extracted": 30,
        "rows_in_export": 23,
        "distinct_captures": 23,
        "missing": 7,
        "run_id": run_id,
    }
    assert "23 distinct captures" in check.description and "7 are missing" in check.description
    assert checks(result)[CHECK_HAS_CAPTURES].passed
    assert warehouse_rows(tmp_path, "SELECT rows_loaded, extracted FROM extralt.runs") == [(23, 30)]

    # The service serves it whole again: the captures asset alone reloads it, no credits.
    emulator.clear_faults()
    again = materialize(
        assets, emulator, instance, tmp_path, selection=[captures_asset_key("shoes")]
    )
    assert again.success and len(emulator.runs) == 1
    assert checks(again)[CHECK_RUN_COUNT].passed
    with warehouse.connect(tmp_path / "warehouse.duckdb") as con:
        ids = history_ids(con, run_id, Target("shoes"))
    with ExtraltClient(emulator.api_key, emulator.url) as client:
        served = rows_of(client.download_export(run_id, tmp_path / "check" / f"x.{fmt}", fmt))
    assert ids == sorted(r["id"] for r in served) and len(ids) == 30
    assert warehouse_rows(tmp_path, "SELECT rows_loaded, extracted FROM extralt.runs") == [(30, 30)]


# --- 8. The run config's format, and corrupt files -------------------------------------------------


def test_run_config_export_format_takes_either_case(emulator, instance, tmp_path):
    """The docs write `jsonl`; earlier versions took only the enum names (`JSONL`)."""
    assets = build_extralt_assets("shoes", "rbt_shoes", budget=10, export_dir=str(tmp_path / "x"))
    assert materialize(
        assets, emulator, instance, tmp_path, selection=[run_asset_key("shoes")]
    ).success
    op = "extralt__shoes__captures"
    for written, served in [
        ("jsonl", "jsonl"),
        ("PARQUET", "parquet"),
        ("JSONL", "jsonl"),
        ("parquet", "parquet"),
    ]:
        result = materialize(
            assets,
            emulator,
            instance,
            tmp_path,
            selection=[captures_asset_key("shoes")],
            run_config={"ops": {op: {"config": {"export_format": written}}}},
        )

        assert result.success, failure_messages(result)
        last = [r for r in emulator.requests if r.path.endswith("/export")][-1]
        assert last.query.get("format") == served, written
        logged = warehouse_rows(tmp_path, "SELECT rows_loaded, export_format FROM extralt.runs")
        assert logged == [(10, served)], written
    assert emulator.count_requests(*EXPORT) == 4


def test_an_unknown_run_config_export_format_is_refused_before_any_request(
    emulator, instance, tmp_path
):
    assets = build_extralt_assets("shoes", "rbt_shoes", budget=10)
    with pytest.raises(dg.DagsterInvalidConfigError, match="export_format") as info:
        materialize(
            assets,
            emulator,
            instance,
            tmp_path,
            run_config={"ops": {"extralt__shoes__captures": {"config": {"export_format": "csv"}}}},
        )
    assert "got csv" in str(info.value)  # Dagster's own message: the Launchpad lists the values
    assert emulator.count_requests() == 0


def _damaged(src: Path, dst: Path, *, group: int, column: str, how: str) -> Path:
    """`src` rewritten with 5 row groups, then one column chunk of one row group damaged."""
    pq.write_table(pq.read_table(src), dst, row_group_size=20)
    with duckdb.connect() as con:
        [(offset, dict_offset, size)] = con.execute(
            "SELECT data_page_offset, dictionary_page_offset, total_compressed_size "
            "FROM parquet_metadata(?) WHERE row_group_id = ? AND path_in_schema = ?",
            [str(dst), group, column],
        ).fetchall()
    data = bytearray(dst.read_bytes())
    start = dict_offset or offset
    if how == "page header":
        data[start : start + 8] = b"\xff" * 8
    else:  # the compressed body of the chunk's pages
        for i in range(start + 24, start + size - 4):
            data[i] ^= 0x5A
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize(
    ("group", "column", "how", "reported"),
    [
        (3, "title", "page header", "title"),
        (0, "description", "page body", "description"),
        (4, "variants, list, element, offers, list, element, seller", "page header", "variants"),
    ],
)
def test_a_corrupt_row_group_is_named_and_nothing_is_loaded(
    conn, tmp_path, group, column, how, reported
):
    good = export(tmp_path, "run_1", 100)
    load(conn, good, "run_1")
    load(conn, export(tmp_path, "run_2", 30, day=1), "run_2")
    before = snapshot(conn)
    bad = _damaged(good, tmp_path / "bad.parquet", group=group, column=column, how=how)

    with pytest.raises(WarehouseExportError) as info:
        load(conn, bad, "run_1")  # a reload: run_1's rows must survive

    message = str(info.value)
    location = f"row group {group} of 5, counting from 0; column {reported}"
    assert info.value.location == location
    assert f"is corrupt ({location})" in message and "nothing was loaded" in message
    assert "run_1" in message and str(bad) in message
    assert snapshot(conn) == before
    assert load(conn, good, "run_1").rows == 100  # the connection is fine


def test_planning_a_load_reads_the_parquet_footer_not_its_rows(conn, tmp_path):
    """The export's columns come from the footer alone. DuckDB 1.5 runs a parameterized
    ``conn.sql`` at once: ``SELECT *`` without ``LIMIT 0`` decoded every row (6.7 s and about
    1.4 GB more peak memory for 1M captures); here the rows are damaged, so reading them fails."""
    from extralt_dagster.warehouse.export import _file_columns

    good = export(tmp_path, "run_1", 100)
    bad = _damaged(good, tmp_path / "bad.parquet", group=0, column="description", how="body")
    with pytest.raises(duckdb.Error):
        conn.execute("SELECT * FROM read_parquet(?)", [str(bad)]).fetchall()

    columns = _file_columns(conn, str(bad), "parquet", None)

    assert columns == _file_columns(conn, str(good), "parquet", None)
    assert "description" in [name for name, _ in columns]


def test_a_corrupt_jsonl_line_is_refused_as_corrupt(conn, tmp_path):
    good = export(tmp_path, "run_1", 40, fmt="jsonl")
    load(conn, good, "run_1", fmt="jsonl")
    before = snapshot(conn)
    lines = good.read_text().splitlines(keepends=True)
    lines[20] = lines[20][:80] + "\x01 not json\n"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(lines))

    with pytest.raises(WarehouseExportError, match="is corrupt") as info:
        load(conn, bad, "run_1", fmt="jsonl")

    assert "line" in str(info.value) and "nothing was loaded" in str(info.value)
    assert snapshot(conn) == before


def test_a_corrupt_page_served_over_http_fails_once_and_changes_nothing(
    emulator, instance, tmp_path
):
    """The footer is whole, so the download is accepted; the load names the damage, and the
    step is not retried: the same bytes would fail the same way."""
    exports = tmp_path / "exports"
    assets = build_extralt_assets(
        "shoes",
        "rbt_shoes",
        budget=200,
        export_dir=str(exports),
        retry_policy=dg.RetryPolicy(max_retries=2),
    )
    assert materialize(assets, emulator, instance, tmp_path).success
    before = warehouse_rows(tmp_path, "SELECT * FROM extralt.shoes_captures ORDER BY ALL")
    downloads = emulator.count_requests(*EXPORT)
    emulator.set_faults(export_corrupt_page=True)

    result = materialize(
        assets, emulator, instance, tmp_path, selection=[captures_asset_key("shoes")]
    )

    assert not result.success
    assert emulator.count_requests(*EXPORT) == downloads + 1  # no step retry
    [message] = failure_messages(result)
    assert "is corrupt (row group 0 of 1, counting from 0; column " in message
    assert "nothing was loaded" in message
    assert warehouse_rows(tmp_path, "SELECT * FROM extralt.shoes_captures ORDER BY ALL") == before
    assert list(exports.iterdir()) == []
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_failure_data.user_failure_data.metadata[
        "extralt/export_damage"
    ].value.startswith("row group 0 of 1")


def test_run_record_extracted_reaches_the_result(conn, tmp_path):
    """`LoadResult.extracted` is the run document's count, unchanged by the export."""
    result = load(conn, export(tmp_path, "run_1", 12), "run_1", extracted=15)
    assert (result.extracted, result.distinct_captures, result.missing_captures) == (15, 12, 3)
    logged_at = conn.execute(f"SELECT loaded_at FROM {SHOES.runs}").fetchone()[0]
    assert logged_at <= datetime.now(UTC)


# --- The emulator's shape faults ------------------------------------------------------------------


def test_shape_faults_hit_only_their_robots_and_count(make_emulator, tmp_path):
    """`export_shape_robots` and `export_shape_count`: the soak deals a shape to one source."""
    emu = make_emulator(concurrency_limit=None)
    with ExtraltClient(emu.api_key, emu.url) as c:
        shoes, books = c.create_run("rbt_shoes", budget=12), c.create_run("rbt_books", budget=12)
        emu.clock.advance(3600)
        emu.set_faults(
            export_nested_field=True,
            export_short_by=2,
            export_shape_robots=["rbt_shoes"],
            export_shape_count=1,
        )

        def served(run_id: str, name: str) -> list[dict]:
            return rows_of(c.download_export(run_id, tmp_path / f"{name}.parquet"))

        shaped, other = served(shoes, "a"), served(books, "b")
        assert len(shaped) == 10 and all(
            NESTED_FIELD in o for r in shaped for v in r["variants"] for o in v["offers"]
        )
        assert len(other) == 12 and NESTED_FIELD not in other[0]["variants"][0]["offers"][0]
        assert emu.faults.export_shape_count == 0  # used up by the one shaped export
        again = served(shoes, "c")
        assert len(again) == 12 and [r["id"] for r in again][:10] == [r["id"] for r in shaped]
        emu.set_faults(export_typeless=True)
        typeless = pq.read_schema(c.download_export(books, tmp_path / "d.parquet"))
        assert str(typeless.field("min_price").type) == "null"
        assert str(typeless.field("options").type) == "null"
        assert (
            typeless.field("variants").type
            == pq.read_schema(tmp_path / "b.parquet").field("variants").type
        )
