"""The warehouse a user gets is readable by the oldest DuckDB the README promises.

The old DuckDB is the real `duckdb` wheel of `warehouse.OLDEST_READER`, installed once with pip
into `.venv-compat/` (ignored by git; about 4 s and 20 MB on a fresh machine), and run in a
child Python that sees only that wheel (`python -S`, `PYTHONPATH`).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import dagster as dg
import duckdb

from extralt_dagster import build_extralt_assets, warehouse
from extralt_dagster.emulator.datagen import write_captures

from .support import failure_messages, resources

COMPAT_DIR = Path(__file__).resolve().parent.parent / ".venv-compat"
TABLES = ("shoes_captures", "shoes_products", "shoes_variants", "runs")


def old_duckdb() -> Path:
    """A folder holding only the `duckdb` package of the oldest promised reader."""
    target = COMPAT_DIR / f"duckdb-{warehouse.OLDEST_READER}"
    if (target / "duckdb").is_dir():
        return target
    COMPAT_DIR.mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="staging-", dir=COMPAT_DIR))
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--no-warn-conflicts",
                "--target",
                str(staging),
                f"duckdb=={warehouse.OLDEST_READER}",
            ],
            check=True,
            timeout=600,
        )
        try:
            staging.rename(target)
        except OSError:  # another session built it meanwhile
            if not (target / "duckdb").is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def read_with_old_duckdb(database: Path, queries: dict[str, str]) -> dict:
    """Run `queries` on `database` (read-only) with the old DuckDB; their first rows, or the
    error it raised, as `{"error": ...}`."""
    code = textwrap.dedent(
        """
        import json, sys
        import duckdb
        out = {"version": duckdb.__version__}
        try:
            con = duckdb.connect(sys.argv[1], read_only=True)
        except duckdb.Error as exc:
            out["error"] = str(exc)
        else:
            for name, sql in json.loads(sys.argv[2]).items():
                out[name] = [list(r) for r in con.execute(sql).fetchall()]
        print(json.dumps(out, default=str))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(old_duckdb())}
    done = subprocess.run(
        [sys.executable, "-S", "-c", code, str(database), json.dumps(queries)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


QUERIES = {
    **{t: f"SELECT count(*) FROM extralt.{t}" for t in TABLES},
    "product_types": "SELECT typeof(min_price), typeof(variants), typeof(product_key) "
    "FROM extralt.shoes_products LIMIT 1",
    "keys": "SELECT count(DISTINCT product_key), sum(price_amount)::DECIMAL(18,2)::VARCHAR "
    "FROM extralt.shoes_variants",
    "nested": "SELECT max(variants[1].offers[1].price.amount) FROM extralt.shoes_captures",
}


def same_queries_now(database: Path) -> dict:
    with duckdb.connect(str(database), read_only=True) as con:
        return {n: [list(r) for r in con.execute(q).fetchall()] for n, q in QUERIES.items()}


def test_the_default_warehouse_reads_with_the_oldest_promised_duckdb(emulator, instance, tmp_path):
    """Two materializations with the README's settings (a plain `DuckDBResource(database=...)`,
    no connection config): the file they create and then write again stays readable."""
    assets = build_extralt_assets("shoes", "rbt_shoes", budget=30, export_dir=str(tmp_path / "x"))
    for _ in range(2):
        result = dg.materialize(
            assets, instance=instance, resources=resources(emulator, tmp_path), raise_on_error=False
        )
        assert result.success, failure_messages(result)
    database = tmp_path / "warehouse.duckdb"

    old = read_with_old_duckdb(database, QUERIES)

    assert old["version"] == warehouse.OLDEST_READER
    assert "error" not in old, old.get("error")
    expected = same_queries_now(database)
    assert {n: old[n] for n in QUERIES} == json.loads(json.dumps(expected, default=str))
    assert [old[t][0][0] for t in TABLES][:2] == [60, 30] and old["runs"] == [[2]]
    assert old["product_types"][0][0] == "DOUBLE"
    with duckdb.connect(str(database), read_only=True) as con:
        [(tags,)] = con.execute(
            "SELECT tags FROM duckdb_databases() WHERE database_name = current_database()"
        ).fetchall()
    assert tags["storage_version"] == f"{warehouse.STORAGE_COMPATIBILITY_VERSION}+"


def test_opting_into_the_newest_format_is_what_old_readers_refuse(tmp_path):
    """The check above can fail: DuckDB 2's own default format is unreadable by the old one."""
    export = write_captures(tmp_path / "e.parquet", run_id="r1", count=20, started_at=1.7e9)
    database = tmp_path / "newest.duckdb"
    con = warehouse.connect(database, config={"storage_compatibility_version": "latest"})
    try:
        warehouse.load_export(
            con, export, target=warehouse.Target("shoes"), run=warehouse.RunRecord("r1")
        )
    finally:
        con.close()

    old = read_with_old_duckdb(database, QUERIES)

    assert old["version"] == warehouse.OLDEST_READER
    assert "version number" in old["error"]
