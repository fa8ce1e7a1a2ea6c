"""Guards of the load that mutation testing found unguarded (issue 14, area warehouse_load).

Plain ``load_export`` on small files written here (no emulator, no Dagster): how an export
DuckDB cannot read is refused, how a JSON lines column with no values is read, and how a
reload's own old rows count when a column's type is decided.
"""

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extralt_dagster import warehouse
from extralt_dagster.warehouse import (
    RunRecord,
    Target,
    WarehouseError,
    WarehouseExportError,
    load_export,
)
from tests.targets import is_lake, target_fixture

SHOES = Target("shoes")


#: A new warehouse of each kind: a DuckDB file and a DuckLake.
conn = target_fixture()


def load(conn, path: Path, run_id: str, fmt: str = "parquet"):
    return load_export(conn, path, target=SHOES, run=RunRecord(run_id), format=fmt)


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def parquet(path: Path, columns: dict[str, list]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def history(conn) -> list[tuple]:
    return conn.execute(f"SELECT run_id, id, grade FROM {SHOES.captures} ORDER BY ALL").fetchall()


def column_type(conn, column: str) -> str:
    [(sql,)] = conn.execute(
        "SELECT data_type FROM duckdb_columns() WHERE table_name = 'shoes_captures' "
        "AND column_name = ?",
        [column],
    ).fetchall()
    return sql


# --- An export DuckDB cannot read ---------------------------------------------------------------


def test_an_export_duckdb_cannot_read_is_refused_naming_file_format_run_and_cause(conn, tmp_path):
    """Not a decoding failure (so no WarehouseExportError): an object with a key twice, which
    DuckDB refuses. DuckDB 1.x refuses it while the loader reads the columns, 2.0 while it
    inserts; either way the message names the file, the format, the run and DuckDB's words."""
    good = jsonl(tmp_path / "good.jsonl", [{"id": "a", "grade": 1}])
    load(conn, good, "run_1", fmt="jsonl")
    before = history(conn)
    twice = tmp_path / "twice.jsonl"
    twice.write_text('{"id": "b", "grade": 2, "grade": 3}\n')

    with pytest.raises(WarehouseError) as info:
        load(conn, twice, "run_2", fmt="jsonl")

    assert type(info.value) is WarehouseError and not info.value.retryable
    message = str(info.value)
    assert repr(str(twice)) in message and "jsonl" in message and "run run_2" in message
    assert "; nothing was " in message
    assert (
        f'DuckDB said: Invalid Input Error: JSON transform error in file "{twice}", in line 1: '
        'Object {"id":"b","grade":2,"grade":3} has duplicate key "grade"'
    ) in message
    assert history(conn) == before
    runs = conn.execute(f"SELECT run_id FROM {SHOES.runs} ORDER BY run_id").fetchall()
    assert runs == [("run_1",)]


def test_json_nested_deeper_than_duckdb_reads_is_refused_and_nothing_is_loaded(conn, tmp_path):
    """A value 200 lists deep: DuckDB 2.0 cannot read it (maximum recursion depth 128), 1.x
    reads it as JSON nested in lists, which the history's BIGINT cannot hold. Refused either
    way, for good, and the history and the run log are as they were."""
    good = jsonl(tmp_path / "good.jsonl", [{"id": "a", "grade": 1}])
    load(conn, good, "run_1", fmt="jsonl")
    before = history(conn)
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"id": "b", "grade": ' + "[" * 200 + "]" * 200 + "}\n")

    with pytest.raises(WarehouseError) as info:
        load(conn, deep, "run_2", fmt="jsonl")

    assert not info.value.retryable and "nothing was loaded" in str(info.value).lower()
    assert history(conn) == before
    runs = conn.execute(f"SELECT run_id FROM {SHOES.runs} ORDER BY run_id").fetchall()
    assert runs == [("run_1",)]


def test_an_export_duckdb_cannot_decode_is_refused_as_corrupt_naming_its_path(conn, tmp_path):
    """Invalid UTF-8 in a JSON line: a decoding failure, so the error says corrupt and carries
    the path (no row group: that is for Parquet)."""
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"id": "a", "title": "caf\xe9"}\n')

    with pytest.raises(WarehouseExportError) as info:
        load(conn, bad, "run_7", fmt="jsonl")

    assert info.value.path == str(bad) and info.value.location is None
    message = str(info.value)
    assert message.startswith(
        f"The export of run run_7 is corrupt: {str(bad)!r} cannot be decoded, and nothing was "
        "loaded."
    )
    assert f'DuckDB said: Invalid Input Error: Malformed JSON in file "{bad}"' in message
    assert message.endswith("invalid UTF-8 encoding in string. ")


# --- How a column's type is decided -------------------------------------------------------------


def test_a_jsonl_column_null_everywhere_is_read_with_history_type(conn, tmp_path):
    """A later run where no capture has a ``grade`` (an undocumented column): JSON lines give
    it no type, so history's BIGINT stands in; no drift, no widening to VARCHAR."""
    first = jsonl(tmp_path / "run_1.jsonl", [{"id": "a", "grade": 4}, {"id": "b", "grade": 5}])
    load(conn, first, "run_1", fmt="jsonl")
    nulls = jsonl(tmp_path / "run_2.jsonl", [{"id": "c", "grade": None}, {"id": "d"}])

    result = load(conn, nulls, "run_2", fmt="jsonl")

    assert result.rows == 2 and result.history_rows == 4
    assert result.columns_widened == result.columns_typed == result.columns_added == ()
    assert dict(result.column_types)["grade"] == "BIGINT" == column_type(conn, "grade")
    assert history(conn) == [
        ("run_1", "a", 4),
        ("run_1", "b", 5),
        ("run_2", "c", None),
        ("run_2", "d", None),
    ]


def test_a_reload_does_not_count_its_own_old_rows_as_history_values(conn, tmp_path):
    """``grade`` first loaded as text by run_1 only; other runs hold no grade. Reloading run_1
    with numbers retypes the column: the rows that held text are the ones being replaced."""
    load(conn, parquet(tmp_path / "r1.parquet", {"id": ["a", "b"], "grade": ["4", "5"]}), "run_1")
    no_grade = parquet(tmp_path / "r2.parquet", {"id": ["c"], "grade": pa.nulls(1, pa.string())})
    load(conn, no_grade, "run_2")
    assert column_type(conn, "grade") == "VARCHAR"
    numbers = parquet(tmp_path / "r1-again.parquet", {"id": ["a", "b"], "grade": [4, 5]})

    result = load(conn, numbers, "run_1")

    assert result.columns_typed == (("grade", "VARCHAR", "BIGINT"),)
    assert result.columns_widened == ()
    assert column_type(conn, "grade") == "BIGINT"
    assert history(conn) == [("run_1", "a", 4), ("run_1", "b", 5), ("run_2", "c", None)]


# --- What the result reports --------------------------------------------------------------------


def tables(conn) -> list[str]:
    """The tables, the run log named ``runs`` whichever target keeps it (a lake: a table per
    source, ``shoes_runs``)."""
    rows = conn.execute("SELECT table_name FROM duckdb_tables() ORDER BY table_name").fetchall()
    run_log = "shoes_runs" if is_lake(conn) else "runs"
    return sorted("runs" if name == run_log else name for (name,) in rows)


def test_an_empty_export_creates_no_history_table_and_says_so(conn, tmp_path):
    """``created`` is False (not just falsy) for an export with no columns, before and after
    history exists; only the load that makes the history table says True."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")

    first = load(conn, empty, "run_0", fmt="jsonl")

    assert first.created is False and first.column_types == ()
    assert (first.rows, first.variants_for_run) == (0, 0)
    assert tables(conn) == ["runs", "shoes_variants"]
    full = load(conn, jsonl(tmp_path / "run_1.jsonl", [{"id": "a", "grade": 1}]), "run_1", "jsonl")
    assert full.created is True and tables(conn) == [
        "runs",
        "shoes_captures",
        "shoes_latest_captures",
        "shoes_variants",
    ]
    assert (full.rows, full.variants_for_run) == (1, 0)  # no variants column: no offers
    again = load(conn, empty, "run_2", fmt="jsonl")
    assert again.created is False and (again.rows, again.history_rows) == (0, 1)


def test_a_load_reports_its_catalog_and_its_phases_by_their_documented_names(conn, tmp_path):
    """The catalog is the file's name, or the lake's alias (what ``catalog.schema.table`` needs). The benchmarks
    read ``phase_seconds`` by these names (the values are timings, which no test asserts)."""
    result = load(
        conn, jsonl(tmp_path / "run_1.jsonl", [{"id": "a", "grade": 1}]), "run_1", "jsonl"
    )

    assert result.catalog == ("lake" if is_lake(conn) else "wh")
    assert list(result.phase_seconds) == [
        "prepare",
        "history",
        "variants",
        "products_and_run_log",
        "checks",
        "commit",
    ]


# --- Refusals before and around the transaction -------------------------------------------------


def test_a_path_that_is_no_plain_file_is_refused_by_name_before_any_statement(conn, tmp_path):
    missing, folder = tmp_path / "missing.parquet", tmp_path / "a-folder.parquet"
    folder.mkdir()
    globbed = parquet(tmp_path / "shoes-[1].parquet", {"id": ["a"]})

    for path in (missing, folder):
        with pytest.raises(WarehouseError) as info:
            load(conn, path, "run_1")
        assert str(info.value) == f"Export file {str(path)!r} does not exist or is not a file."
    with pytest.raises(WarehouseError) as info:
        load(conn, globbed, "run_1")

    assert str(info.value) == (
        f"Export file {str(globbed)!r} has a glob character (* ? [) in its path, which DuckDB "
        "would expand; save the download under a plain name."
    )
    assert tables(conn) == []


def test_a_load_on_a_connection_inside_a_transaction_is_refused_and_leaves_it_open(conn, tmp_path):
    export = parquet(tmp_path / "r1.parquet", {"id": ["a"]})
    conn.execute("BEGIN TRANSACTION")

    with pytest.raises(WarehouseError) as info:
        load(conn, export, "run_1")

    assert str(info.value) == (
        "Cannot start the load transaction (is one already open on this connection?): "
        "TransactionContext Error: cannot start a transaction within a transaction"
    )
    conn.execute("ROLLBACK")  # the caller's transaction was still open, and still its own
    assert load(conn, export, "run_1").rows == 1


def test_a_duckdb_error_mid_load_names_run_file_format_table_and_is_not_retryable(conn, tmp_path):
    """A constraint the user added to history refuses the rows: the same file would fail
    the same way. The reload's DELETE is rolled back and the connection stays usable."""
    first = load(conn, parquet(tmp_path / "r1.parquet", {"id": ["a", "b"]}), "run_1")
    conn.execute(f"ALTER TABLE {SHOES.captures} ALTER COLUMN id SET NOT NULL")
    before = conn.execute(f"SELECT run_id, id FROM {SHOES.captures} ORDER BY ALL").fetchall()
    no_id = parquet(tmp_path / "r1-again.parquet", {"id": pa.array(["c", None])})

    with pytest.raises(WarehouseError) as info:
        load(conn, no_id, "run_1")

    captures = first.table_names["captures"]
    assert str(info.value).startswith(
        f"Loading run run_1 from {str(no_id)!r} (parquet) into {captures} failed; nothing was "
        "changed. Loading it again would fail the same way. DuckDB said: Constraint Error: "
    )
    assert info.value.retryable is False
    assert conn.execute(f"SELECT run_id, id FROM {SHOES.captures} ORDER BY ALL").fetchall() == (
        before
    )
    assert load(conn, parquet(tmp_path / "r2.parquet", {"id": ["d"]}), "run_2").rows == 1


class FailingConnection:
    """A real DuckDB connection whose first statement starting with ``verb`` raises ``error``,
    as DuckDB raises it: a full disk, memory running out, a commit DuckDB refuses (after
    which DuckDB has already rolled the transaction back, so ``rollback_first``)."""

    def __init__(self, conn, verb: str, error: Exception, *, rollback_first: bool = False):
        self._conn, self._verb, self._error = conn, verb, error
        self._rollback_first = rollback_first
        self.failed = False

    def execute(self, sql, *args, **kwargs):
        if not self.failed and sql.lstrip().upper().startswith(self._verb):
            self.failed = True
            if self._rollback_first:
                self._conn.execute("ROLLBACK")
            raise self._error
        return self._conn.execute(sql, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def two_runs(conn, tmp_path) -> tuple[Path, str, list[tuple]]:
    """run_1 loaded (the default format is Parquet); run_2's export; the history table's
    name; every history row."""
    r1 = parquet(tmp_path / "r1.parquet", {"id": ["a", "b"]})
    first = load_export(conn, r1, target=SHOES, run=RunRecord("run_1"), bytes_downloaded=321)
    logged = conn.execute(f"SELECT export_format, rows_loaded, bytes_downloaded FROM {SHOES.runs}")
    assert logged.fetchall() == [("parquet", 2, 321)]
    rows = conn.execute(f"SELECT run_id, id FROM {SHOES.captures} ORDER BY ALL").fetchall()
    return parquet(tmp_path / "r2.parquet", {"id": ["c"]}), first.table_names["captures"], rows


def unchanged(conn, rows: list[tuple]) -> bool:
    now = conn.execute(f"SELECT run_id, id FROM {SHOES.captures} ORDER BY ALL").fetchall()
    logged = conn.execute(f"SELECT run_id FROM {SHOES.runs}").fetchall()
    return now == rows and logged == [("run_1",)]


RETRYABLE_FAILURES = {
    "a full disk mid-load": ("INSERT", duckdb.IOException("IO Error: disk full"), False),
    # DuckDB has rolled back a commit it refused, so the loader's own ROLLBACK fails too ("no
    # transaction is active"): that second error must not replace the first.
    "a commit DuckDB refuses": (
        "COMMIT",
        duckdb.TransactionException("TransactionContext Error: Failed to commit"),
        True,
    ),
}


@pytest.mark.parametrize("failure", RETRYABLE_FAILURES)
def test_a_retryable_duckdb_error_says_so_and_changes_nothing(conn, tmp_path, failure):
    verb, error, rollback_first = RETRYABLE_FAILURES[failure]
    export, captures, rows = two_runs(conn, tmp_path)
    failing = FailingConnection(conn, verb, error, rollback_first=rollback_first)

    with pytest.raises(WarehouseError) as info:
        load(failing, export, "run_2")

    assert failing.failed and info.value.retryable is True
    assert str(info.value) == (
        f"Loading run run_2 from {str(export)!r} (parquet) into {captures} failed; nothing was "
        f"changed. DuckDB said: {error}"
    )
    assert unchanged(conn, rows)
    assert load(conn, export, "run_2").rows == 1


def test_running_out_of_memory_names_the_memory_limit_to_raise(tmp_path):
    conn = warehouse.connect(tmp_path / "wh.duckdb", config={"memory_limit": "512MiB"})
    export, _captures, rows = two_runs(conn, tmp_path)
    oom = duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block")
    short = FailingConnection(conn, "INSERT", oom)

    with pytest.raises(WarehouseError) as info:
        load(short, export, "run_2")

    assert str(info.value) == (
        f"Loading run run_2 from {str(export)!r} ran out of DuckDB memory (memory_limit "
        "512.0 MiB); nothing was changed. Raise memory_limit in the connect() config, or lower "
        "threads. DuckDB said: Out of Memory Error: could not allocate block"
    )
    assert unchanged(conn, rows)
    conn.close()


@pytest.fixture
def local_zone_five_hours_behind(monkeypatch):
    """The process's local time zone is UTC-5 (``datetime.now()`` without a zone says so)."""
    monkeypatch.setenv("TZ", "Etc/GMT+5")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_loaded_at_is_the_instant_of_the_load_whatever_the_zones(
    tmp_path, local_zone_five_hours_behind
):
    """A warehouse whose DuckDB TimeZone is UTC, on a machine whose local zone is not: the
    run log and history record the load's instant, not local wall time read as UTC."""
    conn = warehouse.connect(tmp_path / "wh.duckdb")
    conn.execute("SET TimeZone = 'UTC'")
    before = datetime.now(UTC)
    load(conn, parquet(tmp_path / "r1.parquet", {"id": ["a"]}), "run_1")
    after = datetime.now(UTC)

    [(logged,)] = conn.execute(f"SELECT loaded_at FROM {SHOES.runs}").fetchall()
    [(captured,)] = conn.execute(f"SELECT loaded_at FROM {SHOES.captures}").fetchall()
    assert logged == captured and before <= logged <= after
    conn.close()


def test_a_damaged_page_found_mid_load_is_named_with_duckdbs_words(conn, tmp_path):
    """The footer is whole, so the columns are read; the INSERT then fails on a page whose
    compressed body is damaged. The error names the row group and column, and says why."""
    texts = [f"description {i} " * 20 for i in range(500)]
    good = tmp_path / "good.parquet"
    table = pa.table({"id": [str(i) for i in range(500)], "description": texts})
    pq.write_table(table, good, use_dictionary=False, compression="snappy")
    load(conn, good, "run_1")
    before = conn.execute(f"SELECT count(*) FROM {SHOES.captures}").fetchone()
    [(offset, size)] = conn.execute(
        "SELECT data_page_offset, total_compressed_size FROM parquet_metadata(?) "
        "WHERE path_in_schema = 'description'",
        [str(good)],
    ).fetchall()
    data = bytearray(good.read_bytes())
    for i in range(offset + 40, offset + size - 10):
        data[i] ^= 0x5A
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(bytes(data))

    with pytest.raises(WarehouseExportError) as info:
        load(conn, bad, "run_1")

    location = "row group 0 of 1, counting from 0; column description"
    assert info.value.path == str(bad) and info.value.location == location
    message = str(info.value)
    assert message.startswith(
        f"The export of run run_1 is corrupt ({location}): {str(bad)!r} cannot be decoded"
    )
    with duckdb.connect() as plain, pytest.raises(duckdb.Error) as read:
        plain.execute("SELECT * FROM read_parquet(?)", [str(bad)]).fetchall()
    assert message.endswith(f"DuckDB said: {read.value}")  # DuckDB's own words, unchanged
    assert conn.execute(f"SELECT count(*) FROM {SHOES.captures}").fetchone() == before


# --- Big row groups ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion_export(tmp_path_factory) -> Path:
    """50,000 fashion captures (25 variants each) in two row groups of ~70 MB uncompressed."""
    from extralt_dagster.emulator import FASHION, write_captures

    folder = tmp_path_factory.mktemp("fashion")
    one = write_captures(
        folder / "one.parquet", run_id="run_fashion", count=50_000, catalogue=FASHION
    )
    path = folder / "fashion.parquet"
    duckdb.execute(
        f"COPY (SELECT * FROM '{one}') TO '{path}' "
        "(FORMAT parquet, ROW_GROUP_SIZE 25000, COMPRESSION zstd)"
    )
    return path


def test_big_row_groups_load_on_fewer_threads_within_the_memory_limit(tmp_path, fashion_export):
    """Extralt sizes the export's row groups: two threads decoding these at once run out of
    250 MB (measured: the load fails on two, loads on one), so the history insert runs on one,
    and the connection gets its two back."""
    from extralt_dagster.warehouse.export import _threads_for_parquet

    con = warehouse.connect(tmp_path / "wh.duckdb", config={"memory_limit": "250MB", "threads": 2})
    try:
        assert _threads_for_parquet(con, str(fashion_export)) == 1
        result = load(con, fashion_export, "run_fashion")
        assert result.rows == 50_000 and result.variants_for_run > 1_000_000
        assert con.execute("SELECT current_setting('threads')").fetchone() == (2,)
    finally:
        con.close()


def test_small_row_groups_keep_every_thread(conn, tmp_path):
    from extralt_dagster.emulator import write_captures
    from extralt_dagster.warehouse.export import _memory_limit_bytes, _threads_for_parquet

    path = write_captures(tmp_path / "small.parquet", run_id="run_small", count=2_000)
    assert _threads_for_parquet(conn, str(path)) is None
    assert _memory_limit_bytes(conn) == pytest.approx(1250e6, rel=0.08)  # '1.1 GiB'
