"""Issue 13, classes 1-4: exports the docs allow that used to load wrong data.

1. A load with no type information (NULL everywhere, empty lists, null-typed Parquet columns,
   JSON lines) does not fix a column's type: documented columns get their documented type, and
   a column that holds no value yet takes the next real type.
2. Export columns named like the engine's or the loader's own (`rowid`, `run_id`, ...) cannot
   confuse the products view; they are left out and reported.
3. One bad `extracted_at` (NaN, infinite, out of range) does not refuse the run.
4. An empty or blank `product_id` (or `url`) is no identifier.

Each class runs over several shapes, in Parquet and JSON lines where both apply, and asserts the
rows, the column types and the metadata.
"""

import json
import math
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extralt_dagster import build_extralt_assets, warehouse
from extralt_dagster.assets.checks import CHECK_DRIFT, CHECK_EXTRACTED_AT
from extralt_dagster.emulator.datagen import write_captures
from extralt_dagster.naming import captures_asset_key
from extralt_dagster.warehouse import RunRecord, Target, load_export
from extralt_dagster.warehouse import quote as warehouse_quote
from extralt_dagster.warehouse import sql as warehouse_sql
from tests.targets import reconnect, target_fixture

from .support import event_log_text, failure_messages, materialization_metadata, resources

T0 = 1_767_225_600.0
SHOES = Target("shoes")
FORMATS = ("parquet", "jsonl")


#: A new warehouse of each kind: a DuckDB file and a DuckLake.
conn = target_fixture()


def load(conn, path, run_id, fmt="parquet", target=SHOES):
    return load_export(conn, path, target=target, run=RunRecord(run_id), format=fmt)


def normal_export(tmp_path: Path, run_id: str, count: int, fmt: str, day: int = 1) -> Path:
    suffix = "jsonl" if fmt == "jsonl" else "parquet"
    tmp_path.mkdir(parents=True, exist_ok=True)
    return write_captures(
        tmp_path / f"{run_id}.{suffix}",
        run_id=run_id,
        count=count,
        started_at=T0 + day * 86_400,
        format=fmt,
    )


def write_rows(path: Path, rows: list[dict], fmt: str, schema: pa.Schema | None = None) -> Path:
    """Captures as a JSON lines file, or as Parquet through pyarrow (which types an all-None
    column as `null` and `[]` everywhere as `list<null>`, as a pandas-made export would)."""
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def types(conn, relation: str) -> dict[str, str]:
    rel = conn.sql(f"SELECT * FROM {relation} LIMIT 0")
    return {n: str(t) for n, t in zip(rel.columns, rel.types, strict=True)}


def rows_of(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def offers(rows: list[dict]) -> int:
    return sum(len(v["offers"] or []) for r in rows for v in r["variants"] or [])


# --- 1. A placeholder is not a type -----------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_issue_repro_prices_are_numbers_after_a_null_first_run(conn, tmp_path, fmt):
    first = write_rows(
        tmp_path / f"r1.{fmt}", [{"id": "a", "product_id": "p", "min_price": None}], fmt
    )
    second = write_rows(
        tmp_path / f"r2.{fmt}",
        [
            {"id": "b", "product_id": "p", "min_price": 105.0},
            {"id": "c", "product_id": "q", "min_price": 60.0},
        ],
        fmt,
    )
    assert dict(load(conn, first, "run_1", fmt).column_types)["min_price"] == "DOUBLE"

    result = load(conn, second, "run_2", fmt)

    assert dict(result.column_types)["min_price"] == "DOUBLE"
    assert result.columns_widened == () and result.columns_typed == ()
    [(highest, kind)] = conn.execute(
        f"SELECT max(min_price), typeof(max(min_price)) FROM {SHOES.products}"
    ).fetchall()
    assert (highest, kind) == (105.0, "DOUBLE")
    assert conn.execute(f"SELECT count(*) FROM {SHOES.products}").fetchone() == (2,)


TYPELESS_IN_RUN_1 = {
    "all_null": ("min_price", "max_price", "available", "sku_count", "options", "variants"),
    "empty_lists": ("options", "variants"),
    "null_typed": ("min_price", "max_price", "available", "sku_count", "options", "variants"),
}


def typeless_rows(template: list[dict], shape: str) -> tuple[list[dict], pa.Schema | None]:
    """Run 1 of a source: the captures of `template`, with no type information left in the
    documented columns `shape` names, and an undocumented column that is NULL everywhere."""
    out = []
    for r in template:
        r = dict(r)
        if shape in ("all_null", "null_typed"):
            for name in ("min_price", "max_price", "available", "sku_count", "brand", "options"):
                r[name] = None
            r["variants"] = None
        if shape == "empty_lists":
            r["variants"] = []
            r["options"] = None
        r["rating"] = None
        out.append(r)
    schema = None
    if shape == "null_typed":  # pyarrow's own types: null, and list<null> for variants
        fields = [
            pa.field(n, pa.null() if out[0][n] is None else pa.array([out[0][n]]).type)
            for n in out[0]
        ]
        schema = pa.schema(fields)
        schema = schema.set(
            schema.get_field_index("variants"), pa.field("variants", pa.list_(pa.null()))
        )
        for r in out:
            r["variants"] = []
    return out, schema


@pytest.mark.parametrize(
    ("shape", "fmt"),
    [
        ("all_null", "parquet"),
        ("all_null", "jsonl"),
        ("empty_lists", "parquet"),
        ("empty_lists", "jsonl"),
        ("null_typed", "parquet"),  # JSON lines have no column types at all
    ],
)
def test_a_typeless_first_run_then_a_normal_one_has_the_documented_types(
    conn, tmp_path, fmt, shape
):
    reference = normal_export(tmp_path / "ref", "run_ref", 25, "parquet")
    template = rows_of(reference)
    rows, schema = typeless_rows(template, shape)
    first = write_rows(tmp_path / f"first.{fmt}", rows, fmt, schema)
    second = normal_export(tmp_path, "run_2", 30, fmt)
    if fmt == "jsonl":
        # JSON numbers carry no width: the rating column of run 2 is a real DOUBLE.
        lines = [json.loads(line) for line in second.read_text().splitlines()]
        second.write_text("".join(json.dumps({**r, "rating": 4.5}) + "\n" for r in lines))
    else:
        table = pq.read_table(second)
        table = table.append_column("rating", pa.array([4.5] * table.num_rows, pa.float64()))
        pq.write_table(table, second)

    one = load(conn, first, "run_1", fmt)
    assert one.rows == 25 and one.variants_for_run == 0
    two = load(conn, second, "run_2", fmt)

    # History: the documented types, as a normal first load of the same export gives them.
    normal = load(conn, normal_export(tmp_path / "n", "run_n", 5, fmt), "run_n", fmt, Target("ref"))
    expected = dict(normal.column_types)
    history = dict(two.column_types)
    typeless = TYPELESS_IN_RUN_1[shape]
    assert {n: history[n] for n in typeless} == {n: expected[n] for n in typeless}
    assert history["rating"] == "DOUBLE"
    # A placeholder that got its type is reported as such, not as drift. JSON integers are
    # BIGINT: the documented INTEGER columns widen once, as for any JSON lines load.
    assert ("rating", "VARCHAR", "DOUBLE") in two.columns_typed
    json_integers = {
        ("sku_count", "INTEGER", "BIGINT"),
        ("variants[].offers[].availability.quantity", "INTEGER", "BIGINT"),
    }
    assert set(two.columns_widened) <= (json_integers if fmt == "jsonl" else set())
    # Variants and products follow: every offer of run 2, prices as numbers.
    assert two.variants_for_run == offers(
        rows_of(normal_export(tmp_path / "p", "run_2", 30, "parquet"))
    )
    assert types(conn, SHOES.products)["min_price"] == "DOUBLE"
    [(products, priced)] = conn.execute(
        f"SELECT count(*), count(min_price) FROM {SHOES.products}"
    ).fetchall()
    assert products == 30 and priced > 0
    assert conn.execute(
        f"SELECT typeof(max(price_amount)), count(*) FROM {SHOES.variants} WHERE run_id = 'run_2'"
    ).fetchone() == ("DOUBLE", two.variants_for_run)
    # Run 1's rows are still there, with their values, NULL where they had none.
    prices = sum(r["min_price"] is not None for r in rows)
    assert prices == (
        0 if "min_price" in typeless else sum(r["min_price"] is not None for r in template)
    )
    assert conn.execute(
        f"SELECT count(*), count(min_price), count(rating) FROM {SHOES.captures} "
        "WHERE run_id = 'run_1'"
    ).fetchone() == (25, prices, 0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_undocumented_column_with_no_value_takes_the_next_real_type(conn, tmp_path, fmt):
    """NULL everywhere, then numbers; empty lists everywhere, then lists of structs."""
    first = write_rows(
        tmp_path / f"a.{fmt}",
        [{"id": f"a{i}", "product_id": f"p{i}", "score": None, "tags": []} for i in range(3)],
        fmt,
    )
    second = write_rows(
        tmp_path / f"b.{fmt}",
        [
            {"id": "b1", "product_id": "p1", "score": 7, "tags": [{"k": "colour", "v": "red"}]},
            {"id": "b2", "product_id": "p2", "score": None, "tags": []},
        ],
        fmt,
    )
    load(conn, first, "run_1", fmt)

    result = load(conn, second, "run_2", fmt)

    history = dict(result.column_types)
    assert history["score"] == "BIGINT"
    assert history["tags"] == "STRUCT(k VARCHAR, v VARCHAR)[]"
    assert {n for n, _, _ in result.columns_typed} == {"score", "tags"}
    assert conn.execute(
        f"SELECT score, tags[1].v FROM {SHOES.captures} WHERE id = 'b1'"
    ).fetchone() == (7, "red")
    assert conn.execute(
        f"SELECT count(*) FROM {SHOES.captures} WHERE run_id = 'run_1' AND len(tags) = 0"
    ).fetchone() == (3,)
    # A new session reads the retyped columns too (on a lake they were copied, not altered).
    with reconnect(conn) as other:
        assert other.execute(
            f"SELECT count(*), count(score), sum(len(tags)) FROM {SHOES.captures}"
        ).fetchone() == (5, 1, 1)


def test_a_column_with_values_keeps_its_type(conn, tmp_path):
    """Only a column that holds no value is retyped: text prices with values stay text, and a
    documented column with values refuses a type it cannot hold, as before."""
    first = write_rows(
        tmp_path / "a.parquet", [{"id": "a", "note": "x", "min_price": 1.0}], "parquet"
    )
    load(conn, first, "run_1")
    second = write_rows(
        tmp_path / "b.parquet", [{"id": "b", "note": 5, "min_price": 2.0}], "parquet"
    )
    result = load(conn, second, "run_2")
    assert dict(result.column_types)["note"] == "VARCHAR" and result.columns_typed == ()
    text_prices = write_rows(
        tmp_path / "c.parquet", [{"id": "c", "note": "y", "min_price": "cheap"}], "parquet"
    )
    with pytest.raises(warehouse.WarehouseSchemaError, match="min_price"):
        load(conn, text_prices, "run_3")


def test_a_reload_of_the_only_run_retypes_its_own_placeholder(conn, tmp_path):
    """A run loaded type-less, then reloaded with real values: its own rows are replaced, so
    the column holds no value that counts, and takes the type."""
    write_rows(tmp_path / "a.jsonl", [{"id": "a", "product_id": "p", "score": None}], "jsonl")
    load(conn, tmp_path / "a.jsonl", "run_1", "jsonl")
    write_rows(tmp_path / "b.jsonl", [{"id": "a", "product_id": "p", "score": 2.5}], "jsonl")

    result = load(conn, tmp_path / "b.jsonl", "run_1", "jsonl")

    assert dict(result.column_types)["score"] == "DOUBLE"
    assert conn.execute(f"SELECT score FROM {SHOES.captures}").fetchall() == [(2.5,)]


def test_a_source_whose_first_export_is_typeless_loads_the_next_with_documented_types(
    emulator, instance, tmp_path
):
    """Through the assets: the emulator's `export_typeless` fault on run 1 only."""
    assets = build_extralt_assets("shoes", "rbt_shoes", budget=20, export_dir=str(tmp_path / "x"))
    emulator.set_faults(export_typeless=True, export_shape_count=1)
    res = resources(emulator, tmp_path)
    first = dg.materialize(assets, instance=instance, resources=res, raise_on_error=False)
    assert first.success, failure_messages(first)
    second = dg.materialize(assets, instance=instance, resources=res, raise_on_error=False)
    assert second.success, failure_messages(second)

    md = materialization_metadata(second, captures_asset_key("shoes"))
    columns = {c.name: c.type for c in md["dagster/column_schema"].columns}
    for name, documented in warehouse.DOCUMENTED_TYPES.items():
        if name in ("options", "variants"):
            continue  # nested: compared by a normal load's types below
        assert columns[name] == documented, name
    first_run, second_run = (
        materialization_metadata(r, captures_asset_key("shoes"))["extralt/run_id"]
        for r in (first, second)
    )
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        by_run = {
            run_id: (rows, priced)
            for run_id, rows, priced in con.execute(
                "SELECT run_id, count(*), count(min_price) FROM extralt.shoes_captures "
                "GROUP BY run_id"
            ).fetchall()
        }
        # Run 1 really was type-less. Run 2 is the emulator's data, where a capture may lack a
        # price (its run id, and so its data, is random): most have one.
        assert set(by_run) == {first_run, second_run}
        assert by_run[first_run] == (20, 0)
        assert by_run[second_run][0] == 20 and by_run[second_run][1] >= 15, by_run
        assert con.execute(
            "SELECT typeof(min_price), count(*), count(min_price) > 0 "
            "FROM extralt.shoes_products GROUP BY ALL"
        ).fetchall() == [("DOUBLE", 20, True)]
        variants = con.execute(
            "SELECT typeof(price_amount), count(*) FROM extralt.shoes_variants "
            "WHERE run_id = ? GROUP BY ALL",
            [second_run],
        ).fetchall()
    assert variants == [("DOUBLE", md["extralt/variants_in_run"])] and variants[0][1] > 20
    drift = {e.check_name: e for e in second.get_asset_check_evaluations()}[CHECK_DRIFT]
    assert drift.passed, drift.metadata  # a placeholder getting its type is not drift


# --- 2. Names the engine and the loader use ---------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "column", ["rowid", "ROWID", "run_id", "loaded_at", "robot_id", "product_key"]
)
def test_export_columns_named_like_ours_are_left_out_and_reported(conn, tmp_path, fmt, column):
    source = normal_export(tmp_path, "run_1", 97, "parquet")
    rows = [{**r, column: i % 7} for i, r in enumerate(rows_of(source))]
    # The same products captured a second time in the same run: 137 rows, 97 products.
    rows += [{**r, "id": r["id"] + "-again"} for r in rows[:40]]
    spoofed = write_rows(tmp_path / f"spoof.{fmt}", rows, fmt)

    result = load(conn, spoofed, "run_1", fmt)

    assert result.rows == 137 and result.products == 97
    assert result.columns_ignored == (column,)
    assert column.lower() not in {n.lower() for n, _ in result.column_types} - {
        "run_id",
        "robot_id",
        "loaded_at",
    }
    assert conn.execute(f"SELECT count(*) FROM {SHOES.products}").fetchone() == (97,)
    assert conn.execute(f"SELECT count(DISTINCT product_key) FROM {SHOES.products}").fetchone() == (
        97,
    )
    assert conn.execute(f"SELECT DISTINCT run_id, robot_id FROM {SHOES.captures}").fetchall() == [
        ("run_1", None)
    ]


def test_ignored_columns_are_in_the_metadata_and_the_log(emulator, instance, tmp_path, monkeypatch):
    """The emulator's export, with `rowid` and `loaded_at` columns added as it lands on disk."""
    from extralt_dagster.api.client import ExtraltClient

    real_download = ExtraltClient.download_export

    def download_with_our_names(self, run_id, dest, format="parquet"):
        path = real_download(self, run_id, dest, format)
        with duckdb.connect() as con:
            spoofed = path.with_name("spoofed.parquet")
            con.execute(
                "COPY (SELECT *, 1 AS rowid, 'x' AS loaded_at FROM read_parquet(?)) TO "
                f"{warehouse_quote._lit(str(spoofed))} (FORMAT parquet)",
                [str(path)],
            )
        spoofed.replace(path)
        return path

    monkeypatch.setattr(ExtraltClient, "download_export", download_with_our_names)
    assets = build_extralt_assets("shoes", "rbt_shoes", budget=20, export_dir=str(tmp_path / "x"))

    result = dg.materialize(assets, instance=instance, resources=resources(emulator, tmp_path))

    md = materialization_metadata(result, captures_asset_key("shoes"))
    assert md["extralt/columns_ignored"] == "rowid, loaded_at"
    assert md["extralt/products"] == 20
    assert "(rowid, loaded_at): they were not loaded" in event_log_text(instance)


# --- 3. One bad extracted_at ------------------------------------------------------------------


BAD_INSTANTS = {
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "far_future": 1e20,
    "far_past": -1e20,
}


@pytest.mark.parametrize(
    ("bad", "fmt"),
    [(b, "parquet") for b in BAD_INSTANTS]
    # JSON has no NaN or infinity: only the out-of-range numbers exist in JSON lines.
    + [("far_future", "jsonl"), ("far_past", "jsonl")],
)
def test_one_bad_extracted_at_loads_the_run_and_is_counted(conn, tmp_path, fmt, bad):
    rows = rows_of(normal_export(tmp_path, "run_1", 137, "parquet"))
    rows[5] = {**rows[5], "extracted_at": BAD_INSTANTS[bad]}
    path = write_rows(tmp_path / f"bad.{fmt}", rows, fmt)

    result = load(conn, path, "run_1", fmt)

    assert result.rows == 137 and result.unconverted_extracted_at == 1
    assert result.variants_for_run == offers(rows)
    stored = conn.execute(
        f"SELECT extracted_at FROM {SHOES.captures} WHERE id = ?", [rows[5]["id"]]
    ).fetchone()[0]
    assert math.isnan(stored) if bad == "nan" else stored == BAD_INSTANTS[bad]
    assert conn.execute(
        f"SELECT count(*), count(extracted_at) FROM {SHOES.variants} WHERE product_id = ?",
        [rows[5]["product_id"]],
    ).fetchone() == (offers([rows[5]]), 0)
    # The products view ranks an instant-less capture oldest, never newest.
    assert conn.execute(f"SELECT count(*) FROM {SHOES.products}").fetchone() == (137,)


def test_a_bad_extracted_at_never_wins_the_products_view(conn, tmp_path):
    rows = rows_of(normal_export(tmp_path, "run_1", 3, "parquet"))
    later = [{**r, "id": r["id"] + "-nan", "extracted_at": math.nan, "title": "NaN"} for r in rows]
    load(conn, write_rows(tmp_path / "a.parquet", rows + later, "parquet"), "run_1")
    titles = {t for (t,) in conn.execute(f"SELECT title FROM {SHOES.products}").fetchall()}
    assert titles == {r["title"] for r in rows}


def test_the_check_warns_and_the_metadata_counts(emulator, instance, tmp_path):
    assets = build_extralt_assets("shoes", "rbt_shoes", budget=20, export_dir=str(tmp_path / "x"))
    result = dg.materialize(assets, instance=instance, resources=resources(emulator, tmp_path))
    md = materialization_metadata(result, captures_asset_key("shoes"))
    assert md["extralt/unconverted_extracted_at"] == 0
    check = {e.check_name: e for e in result.get_asset_check_evaluations()}[CHECK_EXTRACTED_AT]
    assert check.passed and check.severity == dg.AssetCheckSeverity.WARN

    from extralt_dagster.assets.checks import check_results as _check_results

    rows = rows_of(normal_export(tmp_path, "run_9", 10, "parquet"))
    rows[0] = {**rows[0], "extracted_at": math.nan}
    conn = warehouse.connect(tmp_path / "w2.duckdb")
    try:
        loaded = load(conn, write_rows(tmp_path / "n.parquet", rows, "parquet"), "run_9")
    finally:
        conn.close()
    [bad] = [c for c in _check_results(loaded, 0.05) if c.check_name == CHECK_EXTRACTED_AT]
    assert not bad.passed and bad.severity == dg.AssetCheckSeverity.WARN
    assert bad.metadata["unconverted"].value == 1


# --- 4. Blank is no identifier ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("blank", ["", " ", "\t", "  \n"])
def test_blank_product_ids_fall_back_to_the_url(conn, tmp_path, fmt, blank):
    rows = rows_of(normal_export(tmp_path, "run_1", 20, "parquet"))
    rows = [{**r, "product_id": blank} for r in rows]
    rows[0] = {**rows[0], "url": blank}  # neither: not a product
    path = write_rows(tmp_path / f"blank.{fmt}", rows, fmt)

    result = load(conn, path, "run_1", fmt)

    assert result.products == 19
    keys = conn.execute(f"SELECT product_key FROM {SHOES.products} ORDER BY 1").fetchall()
    assert keys == sorted((r["url"],) for r in rows[1:])
    assert conn.execute(
        f"SELECT count(DISTINCT product_key), count(*) FILTER (WHERE product_key IS NULL) "
        f"FROM {SHOES.variants}"
    ).fetchone() == (19, offers(rows[:1]))
    assert warehouse.table_stats(conn, SHOES).products == 19


def test_a_variants_table_of_an_earlier_release_gets_the_new_key(tmp_path):
    """Made with `coalesce(product_id, url)`: rebuilt in the load, rows kept. (A DuckDB file
    only: no release wrote a lake, and DuckLake has no generated columns.)"""
    conn = warehouse.connect(tmp_path / "wh.duckdb")
    conn.execute("CREATE SCHEMA extralt")
    old_columns = [
        (n, "VARCHAR GENERATED ALWAYS AS (coalesce(product_id, url)) VIRTUAL")
        if n == "product_key"
        else (n, t)
        for n, t in warehouse.VARIANT_COLUMNS
    ]
    conn.execute(f"CREATE TABLE {SHOES.variants} ({warehouse_sql._ddl_columns(old_columns)})")
    conn.execute(
        f"INSERT INTO {SHOES.variants} (product_id, url, run_id) VALUES ('', 'https://s/1', 'old')"
    )
    load(conn, normal_export(tmp_path, "run_1", 5, "parquet"), "run_1")
    assert conn.execute(
        f"SELECT product_key FROM {SHOES.variants} WHERE run_id = 'old'"
    ).fetchall() == [("https://s/1",)]
    conn.close()
