"""The DuckDB warehouse: loads of real export files (DuckDB-written parquet and JSON lines)."""

import re
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from extralt_dagster import warehouse
from extralt_dagster.emulator.datagen import write_captures
from extralt_dagster.warehouse import (
    RunRecord,
    Target,
    WarehouseError,
    WarehouseLockedError,
    WarehouseSchemaError,
    load_export,
)
from extralt_dagster.warehouse import quote as warehouse_quote
from tests.targets import target_fixture

DAY = 86_400.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SHOES = Target("shoes")


conn = target_fixture()


def export(tmp_path: Path, run_id: str, count: int, *, day: int = 0, fmt="parquet", **kw) -> Path:
    suffix = "jsonl" if fmt == "jsonl" else "parquet"
    name = f"{run_id}_{count}_{day}_{'_'.join(f'{k}-{v}' for k, v in sorted(kw.items()))}.{suffix}"
    return write_captures(
        tmp_path / name, run_id=run_id, count=count, started_at=T0 + day * DAY, format=fmt, **kw
    )


def record(run_id: str, extracted: int | None = None) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        robot_id="rbt_shoes",
        robot_name="Shoes US",
        status="completed",
        extracted=extracted,
        budget=1000,
        created_at=datetime(2026, 1, 1, 9, 0, tzinfo=UTC),
        started_at=datetime(2026, 1, 1, 9, 0, 5, tzinfo=UTC),
        duration_seconds=42.5,
        dagster_run_id=f"dagster-{run_id}",
    )


def load(conn, path, run_id, target=SHOES, **kw):
    return load_export(conn, path, target=target, run=record(run_id), **kw)


def count(conn, relation: str, where: str = "true") -> int:
    return conn.execute(f"SELECT count(*) FROM {relation} WHERE {where}").fetchone()[0]


def snapshot(conn, target=SHOES) -> dict:
    """Every row of every object, plus the history table's schema."""
    out = {}
    for name in ("captures", "products", "variants", "current_variants", "latest_captures", "runs"):
        try:
            out[name] = conn.execute(
                f"SELECT * FROM {getattr(target, name)} ORDER BY ALL"
            ).fetchall()
        except duckdb.CatalogException:
            out[name] = None
    out["schema"] = conn.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? "
        "ORDER BY column_index",
        [f"{target.source}_captures"],
    ).fetchall()
    return out


def file_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def offers_in(path: Path) -> int:
    return sum(len(v["offers"] or []) for row in file_rows(path) for v in row["variants"] or [])


def copy_with(conn, src: Path, dst: Path, select: str) -> Path:
    """Rewrite an export with DuckDB: `select` is run over the rows of `src` (as `t`)."""
    conn.execute(
        f"COPY (SELECT {select} FROM read_parquet(?) t) TO '{dst}' (FORMAT parquet)", [str(src)]
    )
    return dst


# --- Loading ----------------------------------------------------------------------------------


def test_first_load_fills_history_variants_products_and_run_log(conn, tmp_path):
    path = export(tmp_path, "run_1", 300)
    rows = file_rows(path)

    result = load_export(
        conn, path, target=SHOES, run=record("run_1", extracted=300), bytes_downloaded=1234
    )

    assert (result.rows, result.history_rows, result.products, result.created) == (
        300,
        300,
        300,
        True,
    )
    assert result.variants == result.variants_for_run == offers_in(path) > 300
    assert result.runs_logged == 1 and not result.drifted
    ids = {r[0] for r in conn.execute(f"SELECT id FROM {SHOES.captures}").fetchall()}
    assert ids == {r["id"] for r in rows}
    assert count(conn, SHOES.captures, "run_id = 'run_1' AND robot_id = 'rbt_shoes'") == 300
    assert count(conn, SHOES.products) == 300
    assert count(conn, SHOES.variants) == offers_in(path)

    # The history table keeps every export column, with DuckDB's real types, plus the loader's.
    types = dict(result.column_types)
    assert list(types)[:17] == list(rows[0])
    assert types["min_price"] == "DOUBLE" and types["sku_count"] == "INTEGER"
    assert types["variants"].startswith("STRUCT(") and types["variants"].endswith("[]")
    assert (types["run_id"], types["loaded_at"]) == ("VARCHAR", "TIMESTAMP WITH TIME ZONE")

    # A captured row survives the trip unchanged, nested columns included.
    first = rows[0]
    [stored] = conn.execute(
        f"SELECT title, min_price, options, variants FROM {SHOES.captures} WHERE id = ?",
        [first["id"]],
    ).fetchall()
    assert stored == (first["title"], first["min_price"], first["options"], first["variants"])

    # The variants table flattens each offer of each variant.
    variant = first["variants"][0]
    offer = variant["offers"][0]
    flat = conn.execute(
        f"SELECT product_key, product_id, url, title, brand, opt1, opt2, opt3, gtin, mpn, "
        f"price_amount, full_amount, currency, in_stock, quantity, condition, seller, "
        f"seller_type, run_id FROM {SHOES.variants} "
        f"WHERE variant_id = ? AND seller = ?",
        [variant["id"], offer["seller"]],
    ).fetchall()
    assert flat == [
        (
            first["product_id"],
            first["product_id"],
            first["url"],
            first["title"],
            first["brand"],
            variant["opt1"],
            variant["opt2"],
            None,
            variant["identifiers"]["gtin"],
            variant["identifiers"]["mpn"],
            offer["price"]["amount"],
            offer["price"]["full_amount"],
            offer["price"]["currency"],
            offer["availability"]["in_stock"],
            offer["availability"]["quantity"],
            offer["condition"],
            offer["seller"],
            offer["seller_type"],
            "run_1",
        )
    ]
    [(when,)] = conn.execute(
        f"SELECT DISTINCT extracted_at FROM {SHOES.variants} WHERE product_id = ?",
        [first["product_id"]],
    ).fetchall()
    assert abs(when.timestamp() - first["extracted_at"]) < 1e-3

    # The run log.
    [run] = conn.execute(f"SELECT * FROM {SHOES.runs}").fetchall()
    names = [d[0] for d in conn.description]
    logged = dict(zip(names, run, strict=True))
    assert {k: v for k, v in logged.items() if k != "loaded_at"} == {
        "run_id": "run_1",
        "source": "shoes",
        "robot_id": "rbt_shoes",
        "robot_name": "Shoes US",
        "status": "completed",
        "extracted": 300,
        "credits": 600,
        "budget": 1000,
        "created_at": datetime(2026, 1, 1, 9, 0, tzinfo=UTC),
        "started_at": datetime(2026, 1, 1, 9, 0, 5, tzinfo=UTC),
        "duration_seconds": 42.5,
        "dagster_run_id": "dagster-run_1",
        "export_format": "parquet",
        "rows_loaded": 300,
        "bytes_downloaded": 1234,
        "origin": "dagster",
    }
    assert logged["loaded_at"] is not None

    # Checks and preview come from the data.
    assert result.null_price_rows == sum(r["min_price"] is None for r in rows) > 0
    assert result.inverted_price_rows == 0 and result.duplicate_ids == 0
    earliest = sorted(rows, key=lambda r: (r["extracted_at"], r["id"]))[:5]
    preview_columns = ("title", "brand", "min_price", "currency", "available")
    assert list(result.preview) == [{c: r[c] for c in preview_columns} for r in earliest]
    assert warehouse.table_stats(conn, SHOES) == warehouse.WarehouseStats(
        captures=300,
        products=300,
        variants=offers_in(path),
        runs=1,
        last_loaded_at=logged["loaded_at"],
    )


def test_second_run_appends_in_all_four_objects(conn, tmp_path):
    first, second = export(tmp_path, "run_1", 300), export(tmp_path, "run_2", 400, day=1)
    load(conn, first, "run_1")

    result = load(conn, second, "run_2")

    assert (result.rows, result.history_rows, result.products, result.runs_logged) == (
        400,
        700,
        400,  # products 0..299 captured twice, 300..399 once
        2,
    )
    assert result.variants_for_run == offers_in(second)
    assert result.variants == count(conn, SHOES.variants) == offers_in(first) + offers_in(second)
    assert count(conn, SHOES.captures, "run_id = 'run_1'") == 300
    assert count(conn, SHOES.captures, "run_id = 'run_2'") == 400
    # Every product's newest capture is the second run's.
    assert count(conn, SHOES.products) == count(conn, SHOES.products, "run_id = 'run_2'") == 400
    assert conn.execute(f"SELECT run_id FROM {SHOES.runs} ORDER BY run_id").fetchall() == [
        ("run_1",),
        ("run_2",),
    ]


def test_reload_replaces_the_run_and_never_duplicates(conn, tmp_path):
    first, second = export(tmp_path, "run_1", 300), export(tmp_path, "run_2", 400, day=1)
    load(conn, first, "run_1")
    load(conn, second, "run_2")
    history = f"SELECT * EXCLUDE (loaded_at) FROM {SHOES.captures} ORDER BY ALL"
    before = snapshot(conn)
    history_before = conn.execute(history).fetchall()

    again = load(conn, first, "run_1")

    after = snapshot(conn)
    assert again.rows == 300 and again.history_rows == 700 and again.runs_logged == 2
    assert conn.execute(history).fetchall() == history_before  # same rows, none twice
    offers = f"SELECT * EXCLUDE (loaded_at) FROM {SHOES.variants} ORDER BY ALL"
    assert conn.execute(offers).fetchall() == [
        r[:-2] + r[-1:] for r in before["variants"]
    ]  # the same offers, loaded_at aside
    assert len(after["runs"]) == 2 and after["runs"] != before["runs"]  # run_1's loaded_at
    assert count(conn, SHOES.captures, "run_id = 'run_1'") == 300

    # A reload with a different (smaller) export replaces the run's rows, it does not merge.
    smaller = export(tmp_path, "run_1", 120)
    result = load(conn, smaller, "run_1")
    assert (result.rows, result.history_rows) == (120, 520)
    assert result.variants == offers_in(smaller) + offers_in(second)
    assert conn.execute(
        f"SELECT rows_loaded FROM {SHOES.runs} WHERE run_id = 'run_1'"
    ).fetchall() == [(120,)]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "corrupt_pages"])
def test_a_broken_file_changes_nothing(conn, tmp_path, damage):
    first, second = export(tmp_path, "run_1", 300), export(tmp_path, "run_2", 200, day=1)
    load(conn, first, "run_1")
    load(conn, second, "run_2")
    before = snapshot(conn)
    data = bytearray(first.read_bytes())
    broken = tmp_path / f"{damage}.parquet"
    if damage == "garbage":
        broken.write_bytes(b"PAR1 this is not parquet at all" * 100)
    elif damage == "truncated":
        broken.write_bytes(bytes(data[: len(data) // 2]))
    else:
        # Valid footer and schema, unreadable description pages: the read fails mid-INSERT,
        # after the run's old rows were deleted.
        [(offset, size)] = conn.execute(
            "SELECT data_page_offset, total_compressed_size FROM parquet_metadata(?) "
            "WHERE path_in_schema = 'description'",
            [str(first)],
        ).fetchall()
        for i in range(offset + 40, offset + size - 10):
            data[i] ^= 0x5A
        broken.write_bytes(bytes(data))

    with pytest.raises(WarehouseError, match=str(broken.name)) as info:
        load(conn, broken, "run_1")  # a reload: the old rows must survive

    assert not isinstance(info.value, WarehouseSchemaError)
    assert snapshot(conn) == before
    assert count(conn, SHOES.captures, "run_id = 'run_1'") == 300
    # The connection is usable and not left inside a transaction.
    assert load(conn, first, "run_1").rows == 300


class InterruptingConnection:
    """A real DuckDB connection that raises `error` from Python just before the `at`-th
    statement of the load transaction: what an interrupt, a terminated step or a bug does
    between two statements. DuckDB itself never failed, so only the loader's ROLLBACK (not a
    COMMIT, which DuckDB would honour) can undo the statements already run."""

    def __init__(self, conn, at: int, error: BaseException) -> None:
        self._conn, self._at, self._error = conn, at, error
        self._in_transaction = False
        self.statements = 0

    def _before(self, sql: str) -> None:
        verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if verb == "BEGIN":
            self._in_transaction = True
        elif verb in ("COMMIT", "ROLLBACK"):
            self._in_transaction = False
        elif self._in_transaction:
            self.statements += 1
            if self.statements == self._at:
                raise self._error

    def execute(self, sql, *args, **kwargs):
        self._before(sql)
        return self._conn.execute(sql, *args, **kwargs)

    def sql(self, sql, *args, **kwargs):
        self._before(sql)
        return self._conn.sql(sql, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._conn, name)


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("a bug")], ids=type)
def test_an_error_from_python_between_any_two_statements_rolls_back_everything(
    conn, tmp_path, error
):
    """A reload of run_1 that adds columns and replaces rows, interrupted before each of its
    statements in turn: every table, the view and the schema stay exactly as they were."""
    load(conn, export(tmp_path, "run_1", 20), "run_1")
    load(conn, export(tmp_path, "run_2", 15, day=1), "run_2")
    before = snapshot(conn)
    reload = export(tmp_path, "run_1", 25, day=2, extra_columns=True)
    interrupted = 0
    while True:
        proxy = InterruptingConnection(conn, interrupted + 1, error)
        try:
            result = load(proxy, reload, "run_1")
        except type(error) as raised:
            assert raised is error  # propagated as it was, not wrapped
            assert snapshot(conn) == before, f"interrupted before statement {interrupted + 1}"
            interrupted += 1
            continue
        break  # the interrupt point was past the last statement: the load went through
    assert interrupted == proxy.statements >= 10  # every statement of the load was a point
    assert result.columns_added == ("rating", "review_count")
    assert count(conn, SHOES.captures, "run_id = 'run_1'") == 25


# --- Schema evolution -------------------------------------------------------------------------


def test_new_and_missing_columns_are_reported_and_filled_with_null(conn, tmp_path):
    load(conn, export(tmp_path, "run_1", 100), "run_1")
    drifted = export(tmp_path, "run_2", 120, day=1, extra_columns=True, drop_columns=("subtitle",))

    result = load(conn, drifted, "run_2")

    assert result.columns_added == ("rating", "review_count")
    assert result.columns_missing == ("subtitle",)
    assert result.drifted and result.rows == 120
    assert dict(result.column_types)["review_count"] == "BIGINT"
    rows = conn.execute(
        f"SELECT run_id, count(*), count(rating), count(review_count), count(subtitle) "
        f"FROM {SHOES.captures} GROUP BY run_id ORDER BY run_id"
    ).fetchall()
    expected_ratings = sum(r["rating"] is not None for r in file_rows(drifted))
    assert rows[0][:4] == ("run_1", 100, 0, 0) and rows[0][4] > 0
    assert rows[1] == ("run_2", 120, expected_ratings, 120, 0)
    # The products view follows the history table's columns.
    product_columns = [d[0] for d in conn.execute(f"SELECT * FROM {SHOES.products}").description]
    assert product_columns[0] == "product_key"
    assert product_columns[1:] == [n for n, _ in result.column_types]

    # Back to the documented columns: the extra ones are now the missing ones.
    back = load(conn, export(tmp_path, "run_3", 50, day=2), "run_3")
    assert back.columns_added == () and back.columns_missing == ("rating", "review_count")
    assert count(conn, SHOES.captures, "run_id = 'run_3' AND rating IS NULL") == 50


def test_a_type_change_that_cannot_widen_fails_naming_the_column(conn, tmp_path):
    source = export(tmp_path, "run_1", 100)
    load(conn, source, "run_1")
    before = snapshot(conn)
    text_price = copy_with(
        conn, source, tmp_path / "text_price.parquet", "* REPLACE (min_price::VARCHAR AS min_price)"
    )

    with pytest.raises(WarehouseSchemaError) as info:
        load(conn, text_price, "run_2")

    error = info.value
    assert (error.column, error.old_type, error.new_type) == ("min_price", "DOUBLE", "VARCHAR")
    assert "min_price" in str(error) and "DOUBLE" in str(error) and "VARCHAR" in str(error)
    assert snapshot(conn) == before

    nested = copy_with(
        conn,
        source,
        tmp_path / "nested.parquet",
        "* REPLACE (list_transform(variants, lambda v: struct_update(v, offers := "
        "list_transform(v.offers, lambda o: struct_update(o, price := "
        "struct_update(o.price, amount := o.price.amount::VARCHAR))))) AS variants)",
    )
    with pytest.raises(WarehouseSchemaError, match=r"variants\[\]\.offers\[\]\.price\.amount"):
        load(conn, nested, "run_2")
    assert snapshot(conn) == before


def test_type_changes_that_widen_are_applied(conn, tmp_path):
    source = export(tmp_path, "run_1", 100)
    load(conn, source, "run_1")
    wider = copy_with(
        conn,
        export(tmp_path, "run_2", 80, day=1),
        tmp_path / "wider.parquet",
        "* REPLACE (sku_count::BIGINT AS sku_count, list_transform(variants, lambda v: "
        "struct_insert(v, weight_g := (100 + len(v.id))::INTEGER)) AS variants)",
    )

    result = load(conn, wider, "run_2")

    widened = {name: (old, new) for name, old, new in result.columns_widened}
    # A struct gaining a field is reported as an addition, by path; only sku_count widened.
    assert widened == {"sku_count": ("INTEGER", "BIGINT")}
    assert result.columns_added == ("variants[].weight_g",)
    types = dict(result.column_types)
    assert types["sku_count"] == "BIGINT" and "weight_g INTEGER" in types["variants"]
    # Old rows keep their values, with NULL for the new field; new rows have theirs.
    old = conn.execute(
        f"SELECT sku_count, variants FROM {SHOES.captures} WHERE id = ?",
        [file_rows(source)[0]["id"]],
    ).fetchone()
    assert old[0] == file_rows(source)[0]["sku_count"]
    assert [v["weight_g"] for v in old[1]] == [None] * len(old[1])
    assert [v["id"] for v in old[1]] == [v["id"] for v in file_rows(source)[0]["variants"]]
    new = file_rows(wider)[0]
    stored = conn.execute(
        f"SELECT variants FROM {SHOES.captures} WHERE id = ?", [new["id"]]
    ).fetchone()[0]
    assert stored == new["variants"]

    # INTEGER to DOUBLE (here BIGINT to DOUBLE) widens too; narrower files are cast up.
    doubles = copy_with(
        conn, source, tmp_path / "doubles.parquet", "* REPLACE (sku_count::DOUBLE AS sku_count)"
    )
    assert dict(load(conn, doubles, "run_3").column_types)["sku_count"] == "DOUBLE"
    assert load(conn, source, "run_1").columns_widened == ()  # INTEGER into DOUBLE: a cast
    assert count(conn, SHOES.captures) == 280


def test_jsonl_load_equals_parquet_load(conn, tmp_path):
    as_parquet = export(tmp_path, "run_1", 250)
    as_jsonl = export(tmp_path, "run_1", 250, fmt="jsonl")
    pq_target, js_target = Target("shoes_pq"), Target("shoes_js")

    from_parquet = load(conn, as_parquet, "run_1", target=pq_target)
    from_jsonl = load(conn, as_jsonl, "run_1", target=js_target, format="jsonl")

    assert from_parquet.rows == from_jsonl.rows == 250
    assert from_parquet.variants_for_run == from_jsonl.variants_for_run
    # Strings stay strings: DuckDB would read `id` as UUID from JSON if left to guess.
    assert dict(from_jsonl.column_types)["id"] == "VARCHAR"
    for relation in ("captures", "products", "variants"):
        query = "SELECT * EXCLUDE (loaded_at) FROM {} ORDER BY id"
        if relation == "variants":
            query = "SELECT * EXCLUDE (loaded_at) FROM {} ORDER BY variant_id, seller"
        a = conn.execute(query.format(getattr(pq_target, relation))).fetchall()
        b = conn.execute(query.format(getattr(js_target, relation))).fetchall()
        assert a == b, relation
    assert conn.execute(
        f"SELECT DISTINCT export_format FROM {js_target.runs} WHERE source = 'shoes_js'"
    ).fetchall() == [("jsonl",)]

    # Formats mix in one history: a JSON run into the parquet-made table only widens ints.
    mixed = load(
        conn,
        export(tmp_path, "run_2", 40, day=1, fmt="jsonl"),
        "run_2",
        target=pq_target,
        format="jsonl",
    )
    assert mixed.rows == 40 and mixed.columns_added == () and mixed.columns_missing == ()
    assert mixed.columns_widened == (
        ("sku_count", "INTEGER", "BIGINT"),
        ("variants[].offers[].availability.quantity", "INTEGER", "BIGINT"),
    )


def test_jsonl_without_type_clues_takes_the_history_types(conn, tmp_path):
    source = export(tmp_path, "run_1", 60)
    load(conn, source, "run_1")
    before = dict(snapshot(conn)["schema"])
    bare = tmp_path / "bare.jsonl"
    # All-NULL subtitles and empty variant lists: JSON inference sees "NULL" and JSON[].
    conn.execute(
        f"COPY (SELECT * REPLACE (NULL AS subtitle, [] AS variants) FROM read_parquet(?)) "
        f"TO '{bare}' (FORMAT json)",
        [str(source)],
    )

    result = load(conn, bare, "run_2", format="jsonl")

    assert (result.rows, result.variants_for_run) == (60, 0)
    assert result.columns_added == result.columns_missing == ()
    # JSON has one integer type: sku_count widens to BIGINT; the clueless columns keep theirs.
    assert result.columns_widened == (("sku_count", "INTEGER", "BIGINT"),)
    assert dict(result.column_types) == {**before, "sku_count": "BIGINT"}
    assert count(conn, SHOES.captures, "run_id = 'run_2' AND len(variants) = 0") == 60


# --- Products and variants --------------------------------------------------------------------


def small_export(conn, path: Path, rows: list[tuple]) -> Path:
    """A parquet export of a few captures with just these columns."""
    columns = (
        ("id", "VARCHAR"),
        ("url", "VARCHAR"),
        ("extracted_at", "DOUBLE"),
        ("product_id", "VARCHAR"),
        ("title", "VARCHAR"),
        ("min_price", "DOUBLE"),
        ("max_price", "DOUBLE"),
    )
    placeholders = ", ".join(f"?::{t} AS {n}" for n, t in columns)
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE fixture AS SELECT {placeholders} LIMIT 0", [None] * 7
    )
    conn.executemany("INSERT INTO fixture VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute(f"COPY fixture TO '{path}' (FORMAT parquet)")
    conn.execute("DROP TABLE fixture")
    return path


def test_products_pick_the_newest_capture_per_key_with_url_fallback(conn, tmp_path):
    run_a = small_export(
        conn,
        tmp_path / "a.parquet",
        [
            ("a1", "https://s/p1", 100.0, "p1", "A p1", 10.0, 12.0),
            ("a2", "https://s/u2", 100.0, None, "A u2", 20.0, 25.0),
            ("a3", "https://s/p3", 300.0, "p3", "A p3", 30.0, 31.0),
            ("a4", "https://s/p4", 100.0, "p4", "A p4", 40.0, 30.0),  # min > max
            ("a5", None, 100.0, None, "A nothing", None, None),  # no key: not a product
        ],
    )
    run_b = small_export(
        conn,
        tmp_path / "b.parquet",
        [
            ("b1", "https://s/p1", 200.0, "p1", "B p1", 11.0, 12.0),  # newer: wins
            ("b2", "https://s/u2", 50.0, None, "B u2", 21.0, 25.0),  # older: loses
            ("b3", "https://s/p3-moved", 200.0, "p3", "B p3", 32.0, 33.0),  # older: loses
            ("b4", "https://s/p4", 100.0, "p4", "B p4", 41.0, 45.0),  # tie: later load wins
            ("b5", "https://s/p1", 400.0, None, "B url p1", 1.0, 2.0),  # key is the url
        ],
    )
    first = load(conn, run_a, "run_a")
    assert (first.products, first.inverted_price_rows, first.null_price_rows) == (4, 1, 1)
    assert first.variants_for_run == 0  # no variants column: nothing to flatten, no failure

    second = load(conn, run_b, "run_b")

    products = conn.execute(
        f"SELECT product_key, id, title, run_id FROM {SHOES.products} ORDER BY product_key"
    ).fetchall()
    assert products == [
        ("https://s/p1", "b5", "B url p1", "run_b"),
        ("https://s/u2", "a2", "A u2", "run_a"),
        ("p1", "b1", "B p1", "run_b"),
        ("p3", "a3", "A p3", "run_a"),
        ("p4", "b4", "B p4", "run_b"),
    ]
    assert second.products == 5

    # Reloading run_a with a newer p1 capture moves p1 back to run_a.
    small_export(
        conn, tmp_path / "a2.parquet", [("a1", "https://s/p1", 900.0, "p1", "A p1 v2", 9.0, 9.0)]
    )
    load(conn, tmp_path / "a2.parquet", "run_a")
    products = conn.execute(
        f"SELECT product_key, id FROM {SHOES.products} ORDER BY product_key"
    ).fetchall()
    # p1 is run_a's again; u2 and p3 fall back to run_b's captures, the only ones left.
    assert products == [
        ("https://s/p1", "b5"),
        ("https://s/u2", "b2"),
        ("p1", "a1"),
        ("p3", "b3"),
        ("p4", "b4"),
    ]


def test_variants_tolerate_missing_nested_fields(conn, tmp_path):
    path = tmp_path / "thin.parquet"
    conn.execute(
        f"""COPY (
          SELECT 'c' || i AS id, 'https://s/' || i AS url, {T0} + i AS extracted_at,
                 'p' || i AS product_id,
                 [{{'id': 'v' || i, 'opt1': 'M', 'offers': [
                     {{'price': {{'amount': 10.5 + i}}, 'seller': 'S'}},
                     {{'price': {{'amount': 9.5}}, 'seller': 'T'}}]}},
                  {{'id': 'w' || i, 'opt1': 'L', 'offers': []}}] AS variants
          FROM range(50) r(i)) TO '{path}' (FORMAT parquet)"""
    )

    result = load(conn, path, "run_1")

    assert result.variants_for_run == 100 == offers_in(path)
    rows = conn.execute(
        f"SELECT product_key, variant_id, opt1, opt2, gtin, price_amount, currency, in_stock, "
        f"seller, title, extracted_at FROM {SHOES.variants} WHERE product_id = 'p3' ORDER BY seller"
    ).fetchall()
    when = datetime.fromtimestamp(T0 + 3, UTC)
    assert rows == [
        ("p3", "v3", "M", None, None, 13.5, None, None, "S", None, when),
        ("p3", "v3", "M", None, None, 9.5, None, None, "T", None, when),
    ]


# --- Names, connections and locks -------------------------------------------------------------


def test_names_are_quoted_so_keywords_work(conn, tmp_path):
    target = Target("select", schema="order")
    result = load(conn, export(tmp_path, "run_1", 20), "run_1", target=target)
    assert result.rows == 20
    assert count(conn, '"order"."select_captures"') == 20
    assert count(conn, '"order".runs', "source = 'select'") == 1
    assert target.table_names["products"] == "order.select_products"


def test_export_columns_named_like_loader_columns_are_ignored(conn, tmp_path):
    source = export(tmp_path, "run_1", 30)
    spoof = copy_with(
        conn, source, tmp_path / "spoof.parquet", "*, 'evil' AS run_id, 'x' AS product_key"
    )
    result = load(conn, spoof, "run_1")
    assert result.columns_ignored == ("run_id", "product_key")
    assert count(conn, SHOES.captures, "run_id = 'run_1'") == 30
    assert count(conn, SHOES.products, "product_key = product_id") == 30


def test_empty_exports_load_zero_rows_and_log_the_run(conn, tmp_path):
    load(conn, export(tmp_path, "run_1", 30), "run_1")
    empty_parquet = export(tmp_path, "run_2", 0, day=1)
    result = load(conn, empty_parquet, "run_2")
    assert (result.rows, result.history_rows, result.variants_for_run) == (0, 30, 0)
    assert not result.drifted
    empty_jsonl = tmp_path / "empty.jsonl"
    empty_jsonl.write_text("")
    result = load(conn, empty_jsonl, "run_1", format="jsonl")  # replaces run_1 with nothing
    assert (result.rows, result.history_rows, result.variants, result.runs_logged) == (0, 0, 0, 2)
    assert conn.execute(f"SELECT rows_loaded FROM {SHOES.runs} ORDER BY run_id").fetchall() == [
        (0,),
        (0,),
    ]


def test_bad_arguments_fail_before_touching_the_database(conn, tmp_path):
    with pytest.raises(WarehouseError, match="does not exist"):
        load(conn, tmp_path / "missing.parquet", "run_1")
    with pytest.raises(WarehouseError, match="format"):
        load(conn, export(tmp_path, "run_1", 5), "run_1", format="csv")
    with pytest.raises(WarehouseError, match="run_id"):
        RunRecord("")
    # DuckDB would read `x[1].parquet` as the glob `x1.parquet`: refused, not misread.
    export(tmp_path, "run_1", 5).rename(tmp_path / "x1.parquet")
    (tmp_path / "x[1].parquet").write_bytes((tmp_path / "x1.parquet").read_bytes())
    with pytest.raises(WarehouseError, match="glob"):
        load(conn, tmp_path / "x[1].parquet", "run_1")
    assert conn.execute("SELECT count(*) FROM duckdb_tables()").fetchone()[0] == 0


def test_run_record_from_an_api_run_document(conn):
    from extralt_dagster.api.models import ExtraltRun

    run = ExtraltRun.from_api(
        {
            "_id": "run_9",
            "status": "completed",
            "extracted": 7,
            "robotId": "rbt_1",
            "robotName": "Shoes",
            "budget": 10,
            "createdAt": 1_767_225_600_000,
            "startedAt": 1_767_225_601_000,
            "duration": 2500,
        }
    )
    rec = RunRecord.from_run(run, dagster_run_id="dg-1")
    assert rec == RunRecord(
        run_id="run_9",
        robot_id="rbt_1",
        robot_name="Shoes",
        status="completed",
        extracted=7,
        budget=10,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        started_at=datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC),
        duration_seconds=2.5,
        dagster_run_id="dg-1",
    )
    assert rec.credits == 14
    assert warehouse.table_stats(conn, SHOES) == warehouse.WarehouseStats(0, 0, 0, 0, None)


@pytest.mark.parametrize(
    ("file_name", "schema"),
    [
        ("extralt.duckdb", "extralt"),  # the catalog is named after the file: `extralt`
        ("Extralt.duckdb", "extralt"),  # identifiers ignore case: the same collision
        ("extralt.v2.duckdb", "extralt"),  # DuckDB names this catalog `extralt` too
        ("main.duckdb", "extralt"),
        ("main.duckdb", "main"),
        ("shop.duckdb", "shop"),
        ("my warehouse.duckdb", "extralt"),
        ("data.2026-01.duckdb", "extralt"),
        ('wh\'s "best".duckdb', "extralt"),
    ],
)
def test_any_file_name_loads_whatever_the_schema(tmp_path, file_name, schema):
    """DuckDB names a file's catalog after the file: `extralt.t` is ambiguous in
    `extralt.duckdb`. Every name the loader writes is catalog-qualified, and the products
    view's stored SQL names its table in a way that survives a reopen under another alias."""
    path = tmp_path / file_name
    target = Target("shoes", schema=schema)
    first, second = export(tmp_path, "run_1", 40), export(tmp_path, "run_2", 30, day=1)
    con = warehouse.connect(path)
    try:
        load(con, first, "run_1", target=target)
        result = load(con, second, "run_2", target=target, format="parquet")
        [catalog] = con.execute("SELECT current_database()").fetchone()
        stats = warehouse.table_stats(con, target)
        summary = warehouse.summarize(con, schema=schema)
    finally:
        con.close()
    expected = {"captures": 70, "products": 40, "variants": offers_in(first) + offers_in(second)}
    assert (result.history_rows, result.products, result.variants) == tuple(expected.values())
    assert (stats.captures, stats.products, stats.variants, stats.runs) == (
        70,
        40,
        result.variants,
        2,
    )
    assert [(s.source, s.runs, s.captures, s.products) for s in summary.sources] == [
        ("shoes", 2, 70, 40)
    ]
    assert summary.cheapest

    # Read back in a new process-like session: fully qualified, and attached under an alias.
    def quoted(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    with duckdb.connect(str(path), read_only=True) as reader:
        for kind, rows in {**expected, "runs": 2}.items():
            table = f"{quoted(catalog)}.{quoted(schema)}.{quoted(target.table_names[kind].split('.')[1])}"
            assert count(reader, table) == rows, kind
        assert (
            count(reader, f"{quoted(catalog)}.{quoted(schema)}.shoes_products", "run_id = 'run_2'")
            == 30
        )
    with duckdb.connect() as other:
        other.execute(f"ATTACH {warehouse_quote._lit(str(path))} AS elsewhere (READ_ONLY)")
        assert count(other, f"elsewhere.{quoted(schema)}.shoes_products") == 40
        assert count(other, f"elsewhere.{quoted(schema)}.shoes_captures") == 70


def test_connect_applies_settings(tmp_path):
    con = warehouse.connect(tmp_path / "a.duckdb", config={"memory_limit": "512MiB", "threads": 1})
    try:
        settings = dict(
            con.execute(
                "SELECT name, value FROM duckdb_settings() WHERE name IN "
                "('memory_limit', 'threads', 'preserve_insertion_order')"
            ).fetchall()
        )
    finally:
        con.close()
    assert settings == {
        "memory_limit": "512.0 MiB",
        "threads": "1",
        "preserve_insertion_order": "false",
    }
    con = warehouse.connect(tmp_path / "b.duckdb", config={"preserve_insertion_order": True})
    try:
        assert con.execute("SELECT current_setting('preserve_insertion_order')").fetchone() == (
            True,
        )
    finally:
        con.close()


def test_a_lock_held_by_another_process_fails_clearly(tmp_path):
    path = tmp_path / "locked.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, duckdb
                con = duckdb.connect({str(path)!r})
                print("locked", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"  # handshake, no sleep
        with pytest.raises(WarehouseLockedError) as info:
            warehouse.connect(path, lock_timeout_seconds=1.0)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    message = str(info.value)
    assert str(path) in message and info.value.database == str(path)
    assert f"open in process {holder.pid}" in message and info.value.holder_pid == holder.pid
    # It waited and tried again (the first try fails at once), then gave up at the bound.
    attempts = int(re.search(r"within 1 s \((\d+) attempts\)", message).group(1))
    assert attempts >= 2
    # Released: the next connect gets it at once.
    con = warehouse.connect(path, lock_timeout_seconds=1.0)
    con.close()
