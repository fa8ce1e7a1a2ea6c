"""The two warehouse targets the warehouse tests run against: a DuckDB file and a DuckLake with
a SQLite catalog (data files in a local folder).

`target_conn(kind, tmp_path)` opens either; the test modules' `conn` fixtures are parametrized
over `TARGETS` with it, so one test body checks both. `reconnect(conn)` opens the same target
again (a second session, as a reader or the next load would).

`EXTRALT_WAREHOUSE_TARGETS=file` runs the file target alone: for a DuckDB release the
packaged DuckLake extensions do not exist for (they are published up to 1.5.5), offline.
"""

import os
from pathlib import Path

import duckdb
import pytest

from extralt_dagster import warehouse

TARGETS = tuple(
    t.strip() for t in os.environ.get("EXTRALT_WAREHOUSE_TARGETS", "file,ducklake").split(",")
)

#: Where each open connection points, to open it again.
_WHERE: dict[int, object] = {}


def lake_at(tmp_path: Path) -> warehouse.Lake:
    return warehouse.Lake(
        catalog=f"sqlite:{tmp_path / 'lake' / 'catalog.sqlite'}",
        data_path=str(tmp_path / "lake" / "data") + "/",
    )


def target_conn(kind: str, tmp_path: Path, **kwargs) -> duckdb.DuckDBPyConnection:
    where = tmp_path / "wh.duckdb" if kind == "file" else lake_at(tmp_path)
    con = warehouse.connect(where, **kwargs)
    _WHERE[id(con)] = where
    return con


def reconnect(conn: duckdb.DuckDBPyConnection, **kwargs) -> duckdb.DuckDBPyConnection:
    """The same warehouse opened again (the caller closes ``conn`` first for a file)."""
    con = warehouse.connect(_WHERE[id(conn)], **kwargs)
    _WHERE[id(con)] = _WHERE[id(conn)]
    return con


def is_lake(conn: duckdb.DuckDBPyConnection) -> bool:
    return isinstance(_WHERE.get(id(conn)), warehouse.Lake)


def target_fixture():
    """A `conn` fixture over both targets (`conn = target_fixture()` in a test module)."""

    @pytest.fixture(params=TARGETS)
    def conn(request, tmp_path):
        con = target_conn(request.param, tmp_path)
        yield con
        _WHERE.pop(id(con), None)
        con.close()

    return conn
