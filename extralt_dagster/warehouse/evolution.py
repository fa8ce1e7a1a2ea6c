"""Schema evolution: how an export's columns meet history's, decided before anything is written.

``_plan`` compares them and says what the load does: columns to add, to widen, to retype (a
placeholder type that held no value yet), missing ones (loaded as NULL), reserved names left
out; a type change no column can absorb raises ``WarehouseSchemaError``. ``_drift`` reports the
same by path, down into nested fields, as ``LoadResult`` gives it.

The rules, as ``LoadResult`` reports them:

- a column new to the export is added (``ALTER TABLE ADD COLUMN``);
- a column missing from the export is loaded as NULL;
- a type change that widens (integer to a wider integer, integer or FLOAT to DOUBLE, DECIMAL
  to a wider DECIMAL, a struct gaining fields, anything scalar into VARCHAR, also inside lists
  and structs) widens the column (``ALTER COLUMN ... SET DATA TYPE``) or casts on insert; any
  other change raises ``WarehouseSchemaError`` naming the column, and nothing is loaded.

JSON lines are read with the types DuckDB infers, except that strings stay VARCHAR (DuckDB
would otherwise guess UUID, DATE or TIMESTAMP from their content) and values it cannot type
(all NULL, empty lists) take the history table's type, else the documented one
(``DOCUMENTED_TYPES``): a JSONL load gives the same rows as a parquet load of the same captures
(JSON integers are BIGINT, so INTEGER columns widen once).

A placeholder is not a type. A column created from a load with no type for it (NULL everywhere,
empty lists, a null-typed Parquet column) gets its documented type if it has one, else VARCHAR
(JSON[] for JSON lines' empty lists); while it holds no value in history, the next export's
real type replaces it (``columns_typed``; not drift).
A struct field missing from an export reads as NULL; a new one is added. Both are reported by
path (``variants[].offers[].warranty``) in ``columns_missing`` and ``columns_added``, and a
widened nested field in ``columns_widened``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import duckdb

from .errors import WarehouseError, WarehouseSchemaError
from .quote import _q
from .schema import _concrete, _Conflict, _documented, _fill, _merge, _Type, _weaker
from .sql import META_COLUMNS, VARIANT_COLUMNS, _ddl_columns, _key_sql
from .target import Target

#: Names an export column cannot have: the loader's own columns, ``product_key`` (the products
#: view's), and DuckDB's ``rowid`` (a column of that name would hide the row id the products
#: view relies on). Such columns are left out of history and reported (``columns_ignored``).
_RESERVED = frozenset((*META_COLUMNS, "product_key", "rowid"))


@dataclass
class _Plan:
    created: bool
    read_types: list[tuple[str, _Type]]  # export columns to load, with the type to read them as
    add: list[tuple[str, _Type]]
    widen: list[tuple[str, _Type, _Type]]  # (table column, old, new)
    missing: list[str]
    ignored: list[str]
    #: (table column, old, new): a column with no value in history whose type the export
    #: gives for the first time; not drift, and any type may replace it.
    typed: list[tuple[str, _Type, _Type]] = field(default_factory=list)


def _plan(
    file_cols: list[tuple[str, _Type]],
    table_cols: list[tuple[str, _Type]] | None,
    empty_in_history: Callable[[str, _Type], bool] = lambda name, t: False,
) -> _Plan:
    """Compare the export's columns (already in the types to read them as) with history's.

    ``empty_in_history(column, type)`` says whether history holds no value in a column (NULL
    or empty lists only): such a column's type is a placeholder the export's type replaces.
    """
    ignored = [n for n, _ in file_cols if n.lower() in _RESERVED]
    file_cols = [(n, t) for n, t in file_cols if n.lower() not in _RESERVED]
    seen: set[str] = set()
    for name, _ in file_cols:
        if name.lower() in seen:
            raise WarehouseError(f"The export has two columns named {name!r} (ignoring case).")
        seen.add(name.lower())
    if table_cols is None:
        created = [(n, _concrete(_fill(t, _documented(n)))) for n, t in file_cols]
        return _Plan(True, created, [], [], [], ignored)
    table = {n.lower(): (n, t) for n, t in table_cols}
    read: list[tuple[str, _Type]] = []
    add: list[tuple[str, _Type]] = []
    widen: list[tuple[str, _Type, _Type]] = []
    typed: list[tuple[str, _Type, _Type]] = []
    for name, ftype in file_cols:
        existing = table.get(name.lower())
        read.append((name, ftype))
        if existing is None:
            add.append((name, _concrete(_fill(ftype, _documented(name)))))
            continue
        old = existing[1]
        retyped = _retype(old, ftype, existing[0], empty_in_history)
        if retyped is not None:
            typed.append((existing[0], old, retyped))
            continue
        try:
            merged = _merge(old, ftype, existing[0])
        except _Conflict as exc:
            raise WarehouseSchemaError(
                f"Column {exc.path!r} of the export has type {exc.new.sql}, but the history "
                f"table has {exc.old.sql}, and one cannot hold the other. Nothing was loaded. "
                "Fix the export, or migrate the history table's column yourself.",
                column=exc.path,
                old_type=exc.old.sql,
                new_type=exc.new.sql,
            ) from None
        if merged != old:
            widen.append((existing[0], old, merged))
    file_names = {n.lower() for n, _ in file_cols}
    missing = [
        n for n, _ in table_cols if n.lower() not in file_names and n.lower() not in _RESERVED
    ]
    return _Plan(False, read, add, widen, missing, ignored, typed)


def _retype(
    old: _Type, new: _Type, column: str, empty_in_history: Callable[[str, _Type], bool]
) -> _Type | None:
    """The type replacing history's placeholder ``old`` for the export's ``new``, or None
    when ``old`` stays (and is merged as usual). Only a column that holds no value yet is
    retyped; a documented column never goes below its documented type."""
    if not _weaker(old, new) or not empty_in_history(column, old):
        return None
    documented = _documented(column)
    replacement = _fill(_fill(new, documented), old)
    if documented is not None:
        try:
            replacement = _merge(documented, replacement, column)
        except _Conflict:
            return None  # not the documented type: the usual merge decides, and may refuse
    replacement = _concrete(replacement)
    return None if replacement == old else replacement


@dataclass(frozen=True)
class _Drift:
    """How the export's columns differ from history's, as ``LoadResult`` reports it."""

    added: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    widened: tuple[tuple[str, str, str], ...] = ()


def _drift(plan: _Plan, table_cols: Sequence[tuple[str, _Type]] | None) -> _Drift:
    """Top-level columns added and missing, then the same inside nested columns, by path: a
    widened column is compared field by field, so a new ``variants[].offers[].warranty`` is
    an addition and only the fields whose type changed are widenings."""
    added = [n for n, _ in plan.add]
    widened: list[tuple[str, str, str]] = []
    for name, old, new in plan.widen:
        nested_added, nested_widened = _type_changes(old, new, name)
        added += nested_added
        widened += nested_widened
    missing = list(plan.missing)
    table = {n.lower(): (n, t) for n, t in table_cols or ()}
    for name, file_type in plan.read_types:
        existing = table.get(name.lower())
        if existing is not None:
            missing += _fields_missing(existing[1], file_type, existing[0])
    return _Drift(tuple(added), tuple(missing), tuple(widened))


def _type_changes(
    old: _Type, new: _Type, path: str
) -> tuple[list[str], list[tuple[str, str, str]]]:
    """What widening a column from ``old`` to ``new`` changed: the fields it gained and the
    types that changed, each at the deepest path where it happened."""
    if old == new:
        return [], []
    if old.kind == new.kind and old.kind in ("struct", "list", "map"):
        added: list[str] = []
        widened: list[tuple[str, str, str]] = []
        for name, child_path, new_child in _children(new, path):
            old_child = _child(old, name)
            if old_child is None:
                added.append(child_path)
                continue
            more_added, more_widened = _type_changes(old_child, new_child, child_path)
            added += more_added
            widened += more_widened
        return added, widened
    return [], [(path, old.sql, new.sql)]


def _fields_missing(table_t: _Type, file_t: _Type, path: str) -> list[str]:
    """The nested fields of a history column that the export's column lacks, by path. A file
    type with nothing to go on (NULL, JSON) lacks nothing: it has no fields to compare."""
    if table_t.kind != file_t.kind or table_t.kind not in ("struct", "list", "map"):
        return []
    missing: list[str] = []
    for name, child_path, table_child in _children(table_t, path):
        file_child = _child(file_t, name)
        if file_child is None:
            missing.append(child_path)
        else:
            missing += _fields_missing(table_child, file_child, child_path)
    return missing


def _children(t: _Type, path: str) -> list[tuple[str, str, _Type]]:
    """(name, path, type) of a nested type's children: struct fields, a list's element, a
    map's key and value."""
    if t.kind == "struct":
        return [(n, f"{path}.{n}", c) for n, c in t.children]
    if t.kind == "list":
        return [("child", f"{path}[]", t.child)]
    return [(n, f"{path}{{{n}}}", c) for n, c in t.children]


def _child(t: _Type, name: str) -> _Type | None:
    return t.field(name) if t.kind == "struct" else dict(t.children).get(name)


def _variants_key_stored(conn: duckdb.DuckDBPyConnection, target: Target) -> bool:
    """Whether the variants table stores ``product_key`` (this release's table) rather than
    generating it (earlier releases': ``GENERATED_KEY``). A table made with
    ``coalesce(product_id, url)``, which kept '' as a key, is first rebuilt with today's stored
    key, in the load's transaction (DuckDB cannot alter a generated column). One of today's
    generated keys is kept as it is: rebuilding a large table inside a load would cost more
    than the insert saves in many loads, and it reads the same."""
    row = conn.execute(
        "SELECT sql FROM duckdb_tables() WHERE database_name = ? AND schema_name = ? "
        "AND table_name = ?",
        [target.catalog, target.schema, target.table("variants")],
    ).fetchone()
    sql = str(row[0]).lower() if row else ""
    if "generated" not in sql:
        return True
    if "nullif" in sql:
        return False
    rebuilt = target.qualified(f"{target.table('variants')}__rekeyed")
    stored = ", ".join(_q(n) for n, _ in VARIANT_COLUMNS if n != "product_key")
    key = _key_sql("product_id", "url")
    conn.execute(f"CREATE TABLE {rebuilt} ({_ddl_columns(VARIANT_COLUMNS)})")
    conn.execute(
        f"INSERT INTO {rebuilt} (product_key, {stored}) "
        f"SELECT {key}, {stored} FROM {target.variants}"
    )
    conn.execute(f"DROP TABLE {target.variants}")
    conn.execute(f"ALTER TABLE {rebuilt} RENAME TO {_q(target.table('variants'))}")
    return True
