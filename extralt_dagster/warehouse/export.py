"""Reading an export file: its checks, its columns, and the errors that say where it is damaged.

The export is read by DuckDB itself (``read_parquet``, or ``read_json`` for JSON lines);
pyarrow only reads a Parquet footer DuckDB refuses (a file with no columns: a run with no
captures) and finds the damaged row group of a file DuckDB cannot decode.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import duckdb

from ..api.models import EXPORT_FORMATS
from .errors import WarehouseError, WarehouseExportError
from .schema import _documented, _from_duckdb, _json_read_type, _list, _map, _struct, _Type

_GLOB_CHARACTERS = ("*", "?", "[")


def _check_format(fmt: str) -> str:
    value = str(fmt).lower()
    if value not in EXPORT_FORMATS:
        raise WarehouseError(f"format must be one of {EXPORT_FORMATS}, got {fmt!r}")
    return value


def _check_path(path: str | os.PathLike[str]) -> str:
    """``path`` as a string, if it names a file DuckDB reads as itself and nothing else."""
    file_path = os.fspath(path)
    if not os.path.isfile(file_path):
        raise WarehouseError(f"Export file {file_path!r} does not exist or is not a file.")
    if any(c in file_path for c in _GLOB_CHARACTERS):
        # DuckDB would expand the name as a glob pattern and might read other files.
        raise WarehouseError(
            f"Export file {file_path!r} has a glob character ({' '.join(_GLOB_CHARACTERS)}) in "
            "its path, which DuckDB would expand; save the download under a plain name."
        )
    return file_path


def _reader(fmt: str, *, json_columns: bool = False, row_numbers: bool = False) -> str:
    """The table function reading the export; ``?`` is the path (and the JSON column types).
    ``row_numbers`` adds Parquet's ``file_row_number`` column."""
    if fmt == "parquet":
        return "read_parquet(?, file_row_number = true)" if row_numbers else "read_parquet(?)"
    columns = ", columns = ?" if json_columns else ""
    return f"read_json(?, format = 'newline_delimited'{columns})"


def _file_columns(
    conn: duckdb.DuckDBPyConnection,
    path: str,
    fmt: str,
    table_cols: Sequence[tuple[str, _Type]] | None,
) -> list[tuple[str, _Type]]:
    """The export's columns, with the types to read them as (reads only the parquet footer,
    or a sample of the JSON lines)."""
    # LIMIT 0: DuckDB 1.5 runs a relation with parameters at once, so without it this decoded
    # every row of the file (6.7 s and ~1.4 GB of peak memory at 1M captures); 2.0 defers it.
    rel = conn.sql(f"SELECT * FROM {_reader(fmt)} LIMIT 0", params=[path])
    cols = [(name, _from_duckdb(t)) for name, t in zip(rel.columns, rel.types, strict=True)]
    if fmt != "jsonl":
        return _parquet_nulls(path, cols)
    table = {n.lower(): t for n, t in table_cols or ()}
    # Where history has no such column, the documented type stands in for it: JSON lines
    # give no type for a column that is NULL everywhere.
    return [
        (n, _json_read_type(_json_nulls(t), table.get(n.lower()) or _documented(n)))
        for n, t in cols
    ]


_NULL = _Type("null", "NULL")


def _parquet_nulls(path: str, cols: list[tuple[str, _Type]]) -> list[tuple[str, _Type]]:
    """``cols`` with NULL wherever the Parquet file's own schema says null: DuckDB 1.x reads a
    null-typed column (what pyarrow writes for a column of no value) as INTEGER, 2.0 as NULL,
    and a placeholder must not pass for a real type."""
    try:
        import pyarrow.parquet as pq

        arrow = {f.name: f.type for f in pq.read_schema(path)}
    except Exception:  # DuckDB read the file; what pyarrow cannot read changes nothing here
        return cols
    return [(n, _untyped(t, arrow.get(n))) for n, t in cols]


def _untyped(t: _Type, arrow: Any) -> _Type:
    import pyarrow as pa

    if arrow is None:
        return t
    if pa.types.is_null(arrow):
        return _NULL
    if t.kind == "struct" and pa.types.is_struct(arrow):
        fields = {arrow.field(i).name: arrow.field(i).type for i in range(arrow.num_fields)}
        return _struct([(n, _untyped(c, fields.get(n))) for n, c in t.children])
    if t.kind == "list" and (pa.types.is_list(arrow) or pa.types.is_large_list(arrow)):
        return _list(_untyped(t.child, arrow.value_type))
    if t.kind == "map" and pa.types.is_map(arrow):
        key, value = t.children[0][1], t.children[1][1]
        return _map(_untyped(key, arrow.key_type), _untyped(value, arrow.item_type))
    return t


def _json_nulls(t: _Type, element: bool = False) -> _Type:
    """A JSON lines column as DuckDB 2.0 infers it: a field NULL in every line is NULL (DuckDB
    1.x says JSON); a list's JSON element (empty lists everywhere) stays JSON."""
    if t.kind == "json":
        return t if element else _NULL
    if t.kind == "struct":
        return _struct([(n, _json_nulls(c)) for n, c in t.children])
    if t.kind == "list":
        return _list(_json_nulls(t.child, element=True))
    if t.kind == "map":
        return _map(*(_json_nulls(c) for _, c in t.children))
    return t


def _blank(path: str) -> bool:
    """An empty file, or one of only blank lines: a JSON lines export of no captures."""
    size = os.path.getsize(path)
    if size > 65536:
        return False
    with open(path, "rb") as f:
        return not f.read().strip()


def _parquet_without_columns(path: str) -> bool:
    """True for a Parquet file with no columns (what ``pyarrow`` writes for an empty table,
    and DuckDB cannot read: "Need at least one non-root column"). Without a column there is
    no capture to load, whatever row count the footer claims: ``matches_run_count`` tells."""
    try:
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_columns == 0
    except Exception:  # not even pyarrow reads the footer: the caller reports DuckDB's error
        return False


#: Words of DuckDB's messages for a file it cannot decode (thrift page headers, compression,
#: encodings, offsets, JSON syntax).
_CORRUPTION_HINTS = (
    "ttype",
    "tprotocolexception",
    "don't know what type",
    "decompression",
    "corrupt",
    "invalid string encoding",
    "out of buffer",
    "page size",
    "dictionary",
    "malformed json",
    "failed to read file",
    "magic bytes",
    "not a parquet file",
)


#: The place in the query DuckDB may append to its message ("LINE 1: SELECT ... ^").
_QUERY_CONTEXT = re.compile(r"\n+LINE \d+:.*\Z", re.DOTALL)


def _said(exc: duckdb.Error) -> str:
    """DuckDB's words about the file, without the place in the loader's own query that DuckDB
    1.x appends to an error it raises while planning (2.0 does not): that query is not the
    user's, and the message is the same on both versions."""
    return _QUERY_CONTEXT.sub("", str(exc))


def _unreadable(exc: duckdb.Error, path: str, fmt: str, run_id: str) -> WarehouseError:
    """The error for an export whose columns DuckDB cannot read."""
    return _corrupt(exc, path, fmt, run_id) or WarehouseError(
        f"Cannot read {path!r} as a {fmt} export of run {run_id}; nothing was loaded. "
        f"DuckDB said: {_said(exc)}"
    )


def _corrupt(exc: duckdb.Error, path: str, fmt: str, run_id: str) -> WarehouseExportError | None:
    """A ``WarehouseExportError`` saying where the export is damaged, if ``exc`` is DuckDB
    failing to decode it; else None. DuckDB does not say which row group it was reading:
    pyarrow reads the file again, a row group and a column at a time, to find it."""
    if isinstance(exc, duckdb.OutOfMemoryException | duckdb.InterruptException):
        return None
    location = _damaged_row_group(path) if fmt == "parquet" else None
    if location is None and not any(h in str(exc).lower() for h in _CORRUPTION_HINTS):
        return None
    where = f" ({location})" if location else ""
    return WarehouseExportError(
        f"The export of run {run_id} is corrupt{where}: {path!r} cannot be decoded, and "
        f"nothing was loaded. Loading the same file again cannot help; download the export "
        f"again, and if it is still corrupt, the run's export is damaged at Extralt. "
        f"DuckDB said: {_said(exc)}",
        path=path,
        location=location,
    )


def _damaged_row_group(path: str) -> str | None:
    """Where a Parquet file first fails to decode ("row group 2 of 10, counting from 0;
    column description"), or None when pyarrow reads it all."""
    try:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        groups = parquet.num_row_groups
    except Exception:
        return None
    for group in range(groups):
        for name in names:
            try:
                parquet.read_row_group(group, columns=[name])
            except Exception:
                return f"row group {group} of {groups}, counting from 0; column {name}"
    return None


#: What decoding a Parquet row group takes in DuckDB's memory, as a multiple of its uncompressed
#: size: measured on the emulator's exports at 1M captures (row groups of 154 MB load on two
#: threads under 1.1 GiB, row groups of 288 MB run out of memory on two and load on one).
_DECODE_FACTOR = 2.5
_UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def _memory_limit_bytes(conn: duckdb.DuckDBPyConnection) -> float | None:
    """DuckDB's memory limit (``'1.1 GiB'``) in bytes; None when it has none or reads oddly."""
    row = conn.execute("SELECT current_setting('memory_limit')").fetchone()
    match = re.fullmatch(r"\s*([\d.]+)\s*([A-Za-z]*)\s*", str(row[0]) if row else "")
    if match is None or match[2].upper() not in _UNITS:
        return None
    return float(match[1]) * _UNITS[match[2].upper()]


def _threads_for_parquet(conn: duckdb.DuckDBPyConnection, path: str) -> int | None:
    """How many threads can decode the export's row groups at once within the memory limit;
    None when the connection's own setting fits. Extralt, not we, sizes the row groups, and a
    catalogue with many variants per product makes them big: two threads of a fashion
    catalogue's 288 MB row groups run out of memory under the default limit, one does not."""
    limit = _memory_limit_bytes(conn)
    row = conn.execute(
        "SELECT max(s) FROM (SELECT sum(total_uncompressed_size) AS s "
        "FROM parquet_metadata(?) GROUP BY row_group_id)",
        [path],
    ).fetchone()
    threads = conn.execute("SELECT current_setting('threads')").fetchone()
    if limit is None or not row or not row[0] or not threads:
        return None
    fits = max(1, int(0.8 * limit // (_DECODE_FACTOR * float(row[0]))))
    return fits if fits < int(threads[0]) else None
