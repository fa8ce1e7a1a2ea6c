"""The products and current-offers tables equal what ranking all of history gives, whatever the
order of the loads, after a reload, a failed load and history retention."""

import contextlib
import itertools
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from extralt_dagster.emulator.datagen import write_captures
from extralt_dagster.warehouse import (
    HistoryRetention,
    RunRecord,
    Target,
    WarehouseError,
    load_export,
)
from extralt_dagster.warehouse import load as load_module
from extralt_dagster.warehouse import sql as warehouse_sql
from tests.targets import TARGETS, is_lake, target_conn, target_fixture

DAY = 86_400.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SHOES = Target("shoes")

#: Runs of one robot: (run id, captures, day). The products overlap (a run's first N products
#: are those of every longer run); "r_late" ran first but reports the newest captures.
RUNS = {"r1": (30, 1), "r2": (50, 2), "r3": (40, 3), "r_late": (20, 9)}

# The reference, written independently of the loader: every history row ranked per key.
KEY = (
    "coalesce(nullif(trim(product_id, ' ' || chr(9) || chr(10) || chr(13)), ''), "
    "nullif(trim(url, ' ' || chr(9) || chr(10) || chr(13)), ''))"
)
NEWEST = f"""
    SELECT {KEY} AS product_key, * FROM {SHOES.captures}
    WHERE {KEY} IS NOT NULL
    QUALIFY row_number() OVER (
        PARTITION BY {KEY}
        ORDER BY to_timestamp(extracted_at) DESC NULLS LAST, loaded_at DESC, run_id DESC,
                 id DESC NULLS LAST, export_row DESC NULLS LAST) = 1"""
# The offers of those captures, from the variants table (each run has one capture per key).
CURRENT_OFFERS = f"""
    SELECT v.* FROM {SHOES.variants} v
    JOIN ({NEWEST}) p ON v.run_id = p.run_id AND v.product_key = p.product_key"""


conn = target_fixture()


def export(tmp_path, run_id: str, count: int | None = None, day: int | None = None, **kw):
    default_count, default_day = RUNS.get(run_id, (10, 0))
    count = default_count if count is None else count
    day = default_day if day is None else day
    name = f"{run_id}_{count}_{day}_{'_'.join(f'{k}-{v}' for k, v in sorted(kw.items()))}.parquet"
    return write_captures(
        tmp_path / name, run_id=run_id, count=count, started_at=T0 + day * DAY, **kw
    )


def created(day: float) -> datetime:
    return datetime.fromtimestamp(T0 + day * DAY, UTC)


def load(conn, path, run_id, **kw):
    day = RUNS.get(run_id, (0, 0))[1]
    run = RunRecord(run_id=run_id, robot_id="rbt_shoes", created_at=created(day))
    return load_export(conn, path, target=SHOES, run=run, **kw)


def rows(conn, sql: str) -> list[tuple]:
    return sorted(conn.execute(f"SELECT * FROM ({sql})").fetchall(), key=repr)


def assert_current(conn) -> None:
    """Products and current offers hold exactly what ranking all of history gives."""
    products = rows(conn, f"SELECT * FROM {SHOES.products}")
    assert products == rows(conn, NEWEST)
    offers = rows(conn, f"SELECT * FROM {SHOES.current_variants}")
    assert offers == rows(conn, CURRENT_OFFERS)
    assert offers, "the current offers are not empty"


@pytest.mark.parametrize("order", list(itertools.permutations(RUNS))[::5])
def test_products_are_the_newest_captures_whatever_the_load_order(conn, tmp_path, order):
    for run_id in order:
        load(conn, export(tmp_path, run_id), run_id)
        assert_current(conn)
    winners = dict(conn.execute(f"SELECT product_key, run_id FROM {SHOES.products}").fetchall())
    assert len(winners) == 50
    # r_late's 20 products are newest there; r2 alone has products 41-50, r3 products 31-40.
    assert sorted(set(winners.values())) == ["r2", "r3", "r_late"]


def test_a_reload_of_an_old_run_reranks_what_it_held(conn, tmp_path):
    for run_id in ("r1", "r2", "r3"):
        load(conn, export(tmp_path, run_id), run_id)
    # r3 held 40 products; reloaded with 10 captures, products 11-40 fall back to r2.
    load(conn, export(tmp_path, "r3", count=10), "r3")
    assert_current(conn)
    runs = conn.execute(
        f"SELECT run_id, count(*) FROM {SHOES.products} GROUP BY ALL ORDER BY 1"
    ).fetchall()
    assert runs == [("r2", 40), ("r3", 10)]
    # r1, reloaded with captures newer than all the others, takes its 30 products.
    load(conn, export(tmp_path, "r1", day=5), "r1")
    assert_current(conn)
    assert conn.execute(
        f"SELECT count(*) FROM {SHOES.products} WHERE run_id = 'r1'"
    ).fetchone() == (30,)


@pytest.mark.parametrize("failure", ["truncated file", "error after the products step"])
def test_a_failed_load_leaves_products_and_offers_unchanged(conn, tmp_path, monkeypatch, failure):
    load(conn, export(tmp_path, "r1"), "r1")
    load(conn, export(tmp_path, "r2"), "r2")
    tables = (SHOES.products, SHOES.current_variants, SHOES.captures)
    before = [rows(conn, f"SELECT * FROM {t}") for t in tables]
    path = export(tmp_path, "r_late")
    if failure == "truncated file":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:

        def fail(job, rows):
            raise duckdb.IOException("disk gone")

        monkeypatch.setattr(load_module, "_run_log", fail)
    with pytest.raises(WarehouseError):
        load(conn, path, "r_late")
    assert [rows(conn, f"SELECT * FROM {t}") for t in tables] == before
    assert_current(conn)


def test_products_follow_new_history_columns(conn, tmp_path):
    load(conn, export(tmp_path, "r1"), "r1")
    load(conn, export(tmp_path, "r2", extra_columns=True), "r2")
    assert_current(conn)
    history = [c for c, *_ in conn.execute(f"DESCRIBE {SHOES.captures}").fetchall()]
    products = [c for c, *_ in conn.execute(f"DESCRIBE {SHOES.products}").fetchall()]
    assert products == ["product_key", *history]
    load(conn, export(tmp_path, "r3"), "r3")
    assert_current(conn)


def test_a_warehouse_of_an_earlier_release_gains_pointers_and_views(conn, tmp_path):
    """An earlier release's warehouse: a products view ranking all of history, no pointers, and
    history and variants without ``export_row``. The next load migrates it in its transaction."""
    load(conn, export(tmp_path, "r2"), "r2")
    load(conn, export(tmp_path, "r1"), "r1")
    conn.execute(f"DROP VIEW {SHOES.products}")
    conn.execute(f"DROP VIEW {SHOES.current_variants}")
    conn.execute(f"DROP TABLE {SHOES.latest_captures}")
    conn.execute(f"ALTER TABLE {SHOES.captures} DROP COLUMN export_row")
    for column in ("export_row", "loaded_at"):
        conn.execute(f"ALTER TABLE {SHOES.variants} DROP COLUMN {column}")
    conn.execute(f"CREATE VIEW {SHOES.products} AS SELECT * FROM {SHOES.captures}")
    load(conn, export(tmp_path, "r3"), "r3")
    kinds = conn.execute(
        "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE 'shoes_%' "
        "UNION ALL SELECT 'view:' || view_name FROM duckdb_views() WHERE view_name LIKE 'shoes_%'"
    ).fetchall()
    # (A lake also holds the source's own run log.)
    assert sorted(k for (k,) in kinds if k != "shoes_runs" or is_lake(conn)) == [
        "shoes_captures",
        "shoes_latest_captures",
        *(["shoes_runs"] if is_lake(conn) else []),
        "shoes_variants",
        "view:shoes_current_variants",
        "view:shoes_products",
    ]
    # r2's 50 products outlive r3's 40: ten products and their offers still come from r2.
    assert_current(conn)
    [(from_r2,)] = conn.execute(
        f"SELECT count(DISTINCT product_key) FROM {SHOES.current_variants} WHERE run_id = 'r2'"
    ).fetchall()
    assert from_r2 == 10


#: ``product_key`` as earlier releases defined it in the variants table; None: this release's.
#: How earlier releases defined the variants table's key: a DuckDB file may hold one.
EARLIER_VARIANTS_KEYS = {
    "generated": warehouse_sql.GENERATED_KEY,
    "generated, blank ids as keys": (
        "VARCHAR GENERATED ALWAYS AS (coalesce(product_id, url)) VIRTUAL"
    ),
}


def test_a_new_warehouse_stores_the_variants_key(conn, tmp_path):
    assert_variants_key_after_loads(conn, tmp_path, generated=False)


@pytest.mark.parametrize("made", EARLIER_VARIANTS_KEYS)
def test_an_earlier_release_variants_key_is_kept_or_rebuilt_stored(tmp_path, made):
    """A file whose variants table generates today's key keeps the table and loads it without
    the key; one generating the key that kept blank ids is rebuilt stored. (Only a DuckDB file
    has generated columns: a lake never held such a table.)"""
    with contextlib.closing(target_conn("file", tmp_path)) as con:
        con.execute("CREATE SCHEMA extralt")
        columns = [
            (n, EARLIER_VARIANTS_KEYS[made] if n == "product_key" else t)
            for n, t in warehouse_sql.VARIANT_COLUMNS
        ]
        con.execute(f"CREATE TABLE {SHOES.variants} ({warehouse_sql._ddl_columns(columns)})")
        assert_variants_key_after_loads(con, tmp_path, generated=made == "generated")


def assert_variants_key_after_loads(conn, tmp_path, *, generated: bool) -> None:
    for run_id in ("r1", "r_late", "r2"):
        load(conn, export(tmp_path, run_id), run_id)
        assert_current(conn)
    load(conn, export(tmp_path, "r1", count=10, day=5), "r1")  # a reload
    assert_current(conn)
    [(sql,)] = conn.execute(
        "SELECT sql FROM duckdb_tables() WHERE table_name = 'shoes_variants' "
        "AND database_name = current_database()"
    ).fetchall()
    assert ("GENERATED" in sql.upper()) == generated
    assert conn.execute(
        f"SELECT count(*), count(*) FILTER (WHERE product_key IS DISTINCT FROM {KEY}) "
        f"FROM {SHOES.variants}"
    ).fetchone() == (offers_in_history(conn), 0)


def offers_in_history(conn) -> int:
    [(count,)] = conn.execute(
        f"SELECT coalesce(sum((SELECT sum(len(v.offers)) FROM unnest(variants) AS t(v))), 0) "
        f"FROM {SHOES.captures}"
    ).fetchall()
    return int(count)


def test_a_load_leaves_unchanged_views_alone(conn, tmp_path):
    """Re-creating a view on every load would make concurrent loads of one catalog conflict:
    only a change of history's columns re-creates them."""
    load(conn, export(tmp_path, "r1"), "r1")
    oids = (
        "SELECT view_name, view_oid FROM duckdb_views() WHERE view_name LIKE 'shoes_%' ORDER BY 1"
    )
    before = conn.execute(oids).fetchall()
    load(conn, export(tmp_path, "r2"), "r2")
    assert conn.execute(oids).fetchall() == before
    load(conn, export(tmp_path, "r3", extra_columns=True), "r3")
    after = conn.execute(oids).fetchall()
    assert [n for n, _ in after] == [n for n, _ in before] and after != before
    assert "rating" in [c for c, *_ in conn.execute(f"DESCRIBE {SHOES.products}").fetchall()]
    assert_current(conn)


# --- Retention ----------------------------------------------------------------------------------


def run_ids(conn, relation: str, where: str = "true") -> list[str]:
    return [
        r
        for (r,) in conn.execute(
            f"SELECT DISTINCT run_id FROM {relation} WHERE {where} ORDER BY 1"
        ).fetchall()
    ]


def test_retention_keeps_the_last_runs_and_reranks_what_the_dropped_ones_held(conn, tmp_path):
    other = Target("boots")
    load_export(conn, export(tmp_path, "b1"), target=other, run=RunRecord("b1"))
    for run_id in ("r1", "r2", "r3"):
        load(conn, export(tmp_path, run_id), run_id)
    boots_before = rows(conn, f"SELECT * FROM {other.products}")
    # r_late (created day 9) and r3 (day 3) are the 2 newest runs: r1 and r2 leave.
    result = load(
        conn, export(tmp_path, "r_late"), "r_late", history_retention=HistoryRetention(runs=2)
    )
    assert result.runs_dropped == ("r2", "r1")
    for relation in (SHOES.captures, SHOES.variants, SHOES.products, SHOES.current_variants):
        assert run_ids(conn, relation) == ["r3", "r_late"]
    assert run_ids(conn, SHOES.runs, "source = 'shoes'") == ["r3", "r_late"]
    # Products 41-50 were r2's alone: they leave with it.
    assert conn.execute(f"SELECT count(*) FROM {SHOES.products}").fetchone() == (40,)
    assert_current(conn)
    # Nothing of the other source changed.
    assert run_ids(conn, SHOES.runs, "source = 'boots'") == ["b1"]
    assert rows(conn, f"SELECT * FROM {other.products}") == boots_before
    assert result.history_rows == 40 + 20


def test_retention_by_days_drops_runs_created_before_the_window(conn, tmp_path):
    now = datetime.now(UTC)
    thirty_days = HistoryRetention(days=30)

    def load_aged(run_id, age_days, retention=None):
        run = RunRecord(run_id=run_id, created_at=now - timedelta(days=age_days))
        path = export(tmp_path, run_id, count=10 + age_days, day=-age_days)
        return load_export(conn, path, target=SHOES, run=run, history_retention=retention)

    for run_id, age_days in (("old", 40), ("mid", 20), ("new", 1)):
        load_aged(run_id, age_days)
    assert load_aged("new", 1, thirty_days).runs_dropped == ("old",)
    assert run_ids(conn, SHOES.captures) == ["mid", "new"]
    assert run_ids(conn, SHOES.runs) == ["mid", "new"]
    assert_current(conn)
    # A run older than the window leaves in the load that brings it.
    assert load_aged("older", 31, thirty_days).runs_dropped == ("older",)
    assert run_ids(conn, SHOES.captures) == ["mid", "new"]
    assert_current(conn)


def test_no_retention_keeps_every_run(conn, tmp_path):
    for run_id in RUNS:
        result = load(conn, export(tmp_path, run_id), run_id)
        assert result.runs_dropped == ()
    assert run_ids(conn, SHOES.captures) == sorted(RUNS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30 runs", HistoryRetention(runs=30)),
        ("1 run", HistoryRetention(runs=1)),
        (" 90 days ", HistoryRetention(days=90)),
    ],
)
def test_retention_parses_runs_and_days(text, expected):
    assert HistoryRetention.parse(text) == expected


@pytest.mark.parametrize("text", ["0 runs", "30", "thirty days", "-3 days", "2 weeks", ""])
def test_a_bad_retention_names_the_field(text):
    with pytest.raises(WarehouseError, match=r"history_retention .*'30 runs' or '90 days'"):
        HistoryRetention.parse(text)


def test_history_retention_reaches_the_load_from_yaml_and_keywords():
    from extralt_dagster import build_extralt_assets
    from extralt_dagster.api.errors import ExtraltValidationError
    from extralt_dagster.spec import ExtraltSources

    sources = ExtraltSources.model_validate(
        {"sources": [{"name": "shoes", "robot_id": "rbt_abc", "history_retention": "90 days"}]}
    )
    assert sources.sources[0].load_options().history_retention == HistoryRetention(days=90)
    assert (
        ExtraltSources.model_validate({"sources": [{"name": "shoes", "robot_id": "rbt_abc"}]})
        .sources[0]
        .load_options()
        .history_retention
        is None
    )
    with pytest.raises(ValueError, match=r"sources\.0\.history_retention"):
        ExtraltSources.model_validate(
            {"sources": [{"name": "shoes", "robot_id": "rbt_abc", "history_retention": 30}]}
        )
    with pytest.raises(ExtraltValidationError, match=r"history_retention .*'3 weeks'"):
        build_extralt_assets("shoes", "rbt_abc", history_retention="3 weeks")


def test_every_readme_example_query_runs_on_a_loaded_warehouse(conn, tmp_path):
    import re
    from pathlib import Path

    readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    section = re.search(r"^### Example queries\n(.*?)(?=^##)", readme, re.M | re.S)
    assert section, "the README has no Example queries section"
    (block,) = re.findall(r"```sql\n(.*?)```", section.group(1), re.S)
    queries = [q.strip() for q in block.split(";") if q.strip()]
    assert len(queries) == 4
    for run_id in ("r1", "r2"):
        load(conn, export(tmp_path, run_id), run_id)
    # The README's product id is one of datagen's shoes.
    (named,) = set(re.findall(r"product_id = '(\w+)'", block))
    assert conn.execute(
        f"SELECT count(*) FROM {SHOES.products} WHERE product_id = ?", [named]
    ).fetchone() == (1,)
    for query in queries:
        assert conn.execute(query).fetchall(), query


@pytest.mark.skipif("ducklake" not in TARGETS, reason="EXTRALT_WAREHOUSE_TARGETS has no ducklake")
def test_every_readme_ducklake_query_runs_on_a_loaded_lake(tmp_path, monkeypatch):
    """The DuckLake section's SQL, verbatim, in order, on a lake laid out as `make demo-lake`
    lays it out (data/lake/ under the working directory), after two loads of shoes."""
    import re
    from pathlib import Path

    from extralt_dagster import warehouse
    from extralt_dagster.demo import demo_lake

    readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    section = re.search(r"^## DuckLake: .*?\n(.*?)(?=^## )", readme, re.M | re.S)
    assert section, "the README has no DuckLake section"
    (block,) = re.findall(r"```sql\n(.*?)```", section.group(1), re.S)
    attach, *queries = [q.strip() for q in block.split(";") if q.strip()]
    assert len(queries) == 3
    monkeypatch.chdir(tmp_path)
    lake = demo_lake(tmp_path)
    with warehouse.connect(lake) as conn:
        first, second = (
            load(conn, export(tmp_path, run_id), run_id).snapshot_id for run_id in ("r1", "r2")
        )
    (at,) = set(re.findall(r"VERSION => (\d+)", block))
    assert (first, second) == (int(at), int(at) + 1)  # the README's snapshot is the first load's

    # A reader as the README has it: a plain DuckDB with the extensions, the lake attached
    # read-only by its catalog alone.
    with warehouse.connect(lake, read_only=True) as conn:  # loads the packaged extensions
        conn.execute("USE memory")
        conn.execute("DETACH lake")
        conn.execute(attach)
        snapshots, then, changed = (conn.execute(q).fetchall() for q in queries)
        [(now,)] = conn.execute("SELECT count(*) FROM lake.extralt.shoes_products").fetchall()
    assert [row[0] for row in snapshots] == [first, second]
    assert [row[2] for row in snapshots] == ["load shoes run r1", "load shoes run r2"]
    r1, r2 = RUNS["r1"][0], RUNS["r2"][0]
    assert then[0][0] == r1 and now == r2  # as it was after r1, not as it is
    # Since then, r2 holds the newest capture of every product: its own and r1's.
    assert len(changed) == r2 and {row[3] for row in changed} == {"r2"}


def test_a_sources_file_with_retention_keeps_only_its_last_run(
    emulator, instance, tmp_path, monkeypatch
):
    from extralt_dagster import load_extralt_definitions
    from extralt_dagster.naming import captures_asset_key

    from .support import materialization_metadata

    path = tmp_path / "sources.yaml"
    path.write_text(
        "sources:\n"
        "  - name: shoes\n"
        "    robot_id: rbt_shoes\n"
        "    budget: 12\n"
        "    history_retention: 1 run\n"
    )
    monkeypatch.setenv("EXTRALT_API_KEY", emulator.api_key)
    database = tmp_path / "data" / "warehouse.duckdb"
    defs = load_extralt_definitions(path, duckdb_path=str(database), base_url=emulator.url)
    job = defs.resolve_job_def("extralt_shoes_job")
    assert job.execute_in_process(instance=instance).success
    second = job.execute_in_process(instance=instance)
    assert second.success
    first_run, second_run = emulator.runs.values()  # in the order they were created
    md = materialization_metadata(second, captures_asset_key("shoes"))
    assert md["extralt/runs_dropped"] == first_run.id
    with duckdb.connect(str(database), read_only=True) as con:
        for table in ("shoes_captures", "shoes_variants", "shoes_products", "runs"):
            assert con.execute(f"SELECT DISTINCT run_id FROM extralt.{table}").fetchall() == [
                (second_run.id,)
            ], table
