"""The shipped demo: its sources file, the default code location's environment rules, `make demo`."""

import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from extralt_dagster import ExtraltAuthError, load_extralt_definitions
from extralt_dagster.definitions import DEMO_SOURCES, EMULATOR_URL, resolve_connection
from extralt_dagster.emulator import DEMO_API_KEY

PROJECT = Path(__file__).resolve().parents[1]


def test_shipped_demo_sources_load_and_materialize(emulator, instance, tmp_path):
    database = tmp_path / "demo.duckdb"
    defs = load_extralt_definitions(
        DEMO_SOURCES, duckdb_path=str(database), api_key=emulator.api_key, base_url=emulator.url
    )
    result = defs.resolve_job_def("extralt_job").execute_in_process(instance=instance)
    assert result.success
    assert emulator.count_requests("POST", "/v0/extract/runs") == 3
    with duckdb.connect(str(database), read_only=True) as con:
        counts = dict(
            con.execute("select source, rows_loaded from extralt.runs order by source").fetchall()
        )
    assert counts == {"books": 150, "outdoor": 200, "shoes": 300}
    assert {s.name for s in defs.schedules} == {
        "extralt_shoes_schedule",
        "extralt_outdoor_schedule",
        "extralt_books_schedule",
    }


def test_no_key_and_no_url_means_the_emulator_and_says_so():
    conn = resolve_connection({})
    assert (conn.base_url, conn.api_key, conn.emulated) == (EMULATOR_URL, DEMO_API_KEY, True)


def test_a_key_never_goes_to_the_emulator_by_default():
    conn = resolve_connection({"EXTRALT_API_KEY": "real-key"})
    assert conn.base_url == "https://api.extralt.com" and not conn.emulated


def test_a_remote_url_without_a_key_is_an_error_naming_the_variable():
    with pytest.raises(ExtraltAuthError, match="EXTRALT_API_KEY"):
        resolve_connection({"EXTRALT_BASE_URL": "https://api.extralt.com"})
    assert resolve_connection({"EXTRALT_BASE_URL": "http://127.0.0.1:9999"}).emulated


def test_make_demo_runs_the_pipeline_and_prints_rows(tmp_path):
    """`extralt-dagster demo`, as `make demo` runs it, in a scratch project folder."""
    shutil.copyfile(PROJECT / "dagster.yaml", tmp_path / "dagster.yaml")
    cli = Path(sys.executable).with_name("extralt-dagster")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("EXTRALT_")}
    env.pop("DAGSTER_HOME", None)
    proc = subprocess.run(
        [str(cli), "demo", "--project", str(tmp_path), "--speed", "50"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "3 Extralt runs created, 0 stopped, 0 left running" in out
    assert "shoes" in out and "300" in out and "Cheapest in-stock products" in out
    assert (tmp_path / "data" / "demo.duckdb").exists()
    assert (tmp_path / ".dagster_home" / "dagster.yaml").exists()
