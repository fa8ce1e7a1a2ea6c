"""The README's "The Dagster assets" and "DuckLake" examples, run verbatim against the emulator.

The block is executed as written, from a fresh working directory, so its DuckDB path and the
default schema are the ones a user gets. The one change: the API is the emulator, reached by
pointing the `extralt` resource's `base_url` at it (a user's points at api.extralt.com).
"""

import re
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from extralt_dagster import ExtraltResource

from .support import FAST_POLL

README = Path(__file__).resolve().parents[1].joinpath("README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, f"the README has no section {title!r}"
    return match.group(1)


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_the_dagster_assets_example_loads_into_its_own_defaults(
    emulator, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    (block,) = _python_blocks(_section("The Dagster assets"))
    robot = re.search(r'"(rbt_[a-z0-9_]+)"', block)
    assert robot, "the example names no robot"
    emulator.add_robot(robot.group(1), "shoes.example")  # the user's own robot
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EXTRALT_API_KEY", emulator.api_key)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    defs: dg.Definitions = namespace["defs"]
    duckdb_resource = defs.resources["duckdb"]
    assets = namespace["shoes"]

    extralt = ExtraltResource(
        api_key=dg.EnvVar("EXTRALT_API_KEY"), base_url=emulator.url, **FAST_POLL
    )
    result = dg.materialize(assets, resources={"extralt": extralt, "duckdb": duckdb_resource})
    assert result.success
    assert emulator.count_requests("POST", "/v0/extract/runs") == 1

    database = tmp_path / duckdb_resource.database
    assert database.is_file(), f"{duckdb_resource.database} was not created under the cwd"
    budget = int(re.search(r"budget=(\d+)", block).group(1))
    with duckdb.connect(str(database), read_only=True) as conn:
        # The README's own example queries name the tables this way.
        captures = conn.execute("SELECT count(*) FROM extralt.shoes_captures").fetchone()
        products = conn.execute("SELECT count(*) FROM extralt.shoes_products").fetchone()
        runs = conn.execute("SELECT source, status, rows_loaded FROM extralt.runs").fetchall()
    assert (captures, products) == ((budget,), (budget,))
    assert runs == [("shoes", "completed", budget)]


def test_the_ducklake_example_loads_into_its_lake(
    emulator, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    from extralt_dagster import DuckLakeResource, warehouse

    (block,) = _python_blocks(_section("DuckLake: a warehouse readers never block"))
    robot = re.search(r'"(rbt_[a-z0-9_]+)"', block)
    assert robot, "the example names no robot"
    emulator.add_robot(robot.group(1), "shoes.example")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    defs: dg.Definitions = namespace["defs"]
    resource = defs.resources["duckdb"]
    assert isinstance(resource, DuckLakeResource)
    assert resource.catalog == f"sqlite:{tmp_path.resolve() / 'data' / 'lake' / 'catalog.sqlite'}"

    extralt = ExtraltResource(api_key=emulator.api_key, base_url=emulator.url, **FAST_POLL)
    result = dg.materialize(defs.assets, resources={"extralt": extralt, "duckdb": resource})
    assert result.success
    budget = int(re.search(r"budget=(\d+)", block).group(1))
    assert list((tmp_path / "data" / "lake" / "files").rglob("*.parquet"))
    with warehouse.connect(resource.lake(), read_only=True) as conn:
        products = conn.execute("SELECT count(*) FROM lake.extralt.shoes_products").fetchone()
    assert products == (budget,)
