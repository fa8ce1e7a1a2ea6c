"""A small model of DuckDB types: enough to compare an export's schema with history's and to
compute a type both fit in (``_merge``), to fill a type-less column with its documented type,
and to say how the export drifted from history, field by field (``_drift`` in ``evolution``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import duckdb

from .quote import _q

__all__ = ["DOCUMENTED_DESCRIPTIONS", "DOCUMENTED_TYPES"]


@dataclass(frozen=True)
class _Type:
    kind: str  # "scalar" | "struct" | "list" | "map" | "null" | "json"
    sql: str
    children: tuple[tuple[str, _Type], ...] = ()

    @property
    def child(self) -> _Type:
        return self.children[0][1]

    def field(self, name: str) -> _Type | None:
        """A struct field by case-insensitive name."""
        lname = name.lower()
        for fname, ftype in self.children:
            if fname.lower() == lname:
                return ftype
        return None

    def field_name(self, name: str) -> str:
        lname = name.lower()
        return next(f for f, _ in self.children if f.lower() == lname)


def _struct(fields: Sequence[tuple[str, _Type]]) -> _Type:
    body = ", ".join(f"{_q(n)} {t.sql}" for n, t in fields)
    return _Type("struct", f"STRUCT({body})", tuple(fields))


def _list(child: _Type) -> _Type:
    return _Type("list", f"{child.sql}[]", (("child", child),))


def _map(key: _Type, value: _Type) -> _Type:
    return _Type("map", f"MAP({key.sql}, {value.sql})", (("key", key), ("value", value)))


_VARCHAR = _Type("scalar", "VARCHAR")
#: Type kinds that carry no information: a NULL-typed column, JSON inferred from empty lists.
_PLACEHOLDER_KINDS = ("null", "json")


def _from_duckdb(t: duckdb.typing.DuckDBPyType) -> _Type:
    tid = t.id
    text = str(t)
    if tid == "null":
        return _Type("null", text)
    if text == "JSON":
        return _Type("json", text)
    if tid == "struct":
        return _struct([(n, _from_duckdb(c)) for n, c in t.children])
    if tid == "list":
        return _list(_from_duckdb(t.children[0][1]))
    if tid == "map":
        return _map(_from_duckdb(t.children[0][1]), _from_duckdb(t.children[1][1]))
    return _Type("scalar", text)


_OPTION = 'STRUCT("name" VARCHAR, "values" VARCHAR[])'
_OFFER = (
    "STRUCT(price STRUCT(amount DOUBLE, full_amount DOUBLE, currency VARCHAR), "
    "availability STRUCT(in_stock BOOLEAN, quantity INTEGER), condition VARCHAR, "
    "seller VARCHAR, seller_type VARCHAR)"
)
#: The export's columns as ../shared/EXTRALT_API.md documents them, in the DuckDB types a
#: Parquet export carries. A column that arrives with no type (NULL everywhere, empty lists,
#: JSON lines) is created with its documented type, never with a guess.
DOCUMENTED_TYPES: Mapping[str, str] = {
    "id": "VARCHAR",
    "url": "VARCHAR",
    "extracted_at": "DOUBLE",
    "product_id": "VARCHAR",
    "group_id": "VARCHAR",
    "title": "VARCHAR",
    "subtitle": "VARCHAR",
    "brand": "VARCHAR",
    "description": "VARCHAR",
    "min_price": "DOUBLE",
    "max_price": "DOUBLE",
    "currency": "VARCHAR",
    "available": "BOOLEAN",
    "sku_count": "INTEGER",
    "image_url": "VARCHAR",
    "options": f"STRUCT(opt1 {_OPTION}, opt2 {_OPTION})",
    "variants": (
        "STRUCT(id VARCHAR, opt1 VARCHAR, opt2 VARCHAR, "
        f"identifiers STRUCT(gtin VARCHAR, mpn VARCHAR), offers {_OFFER}[])[]"
    ),
}
_DOCUMENTED = {n: _from_duckdb(duckdb.sqltype(t)) for n, t in DOCUMENTED_TYPES.items()}

#: What each documented export column holds (the API docs' capture row), for the UI's Columns
#: table; an export column missing here is one the docs do not list.
DOCUMENTED_DESCRIPTIONS: Mapping[str, str] = {
    "id": "The capture's id (a uuid): one product page extracted once.",
    "url": "The product page the capture was extracted from.",
    "extracted_at": "When the page was extracted: epoch seconds (a float).",
    "product_id": "The retailer's product id; with the URL, what a product is keyed by.",
    "group_id": "The retailer's id of the product's group (the same model in other colours).",
    "title": "The product's title.",
    "subtitle": "The product's subtitle.",
    "brand": "The product's brand.",
    "description": "The product's description text.",
    "min_price": "The lowest price among the product's offers.",
    "max_price": "The highest price among the product's offers.",
    "currency": "The prices' currency (ISO 4217 code).",
    "available": "Whether any variant is in stock.",
    "sku_count": "How many variants (SKUs) the product has.",
    "image_url": "The product's main image.",
    "options": "The product's options: opt1, opt2, ..., each {name, values}, e.g. size and colour.",
    "variants": "The product's variants: id, opt1, opt2, ..., identifiers {gtin, mpn} and offers "
    "(price {amount, full_amount, currency}, availability {in_stock, quantity}, condition, "
    "seller, seller_type); flat in <name>_variants.",
}


def _documented(name: str) -> _Type | None:
    return _DOCUMENTED.get(name.lower())


_SIGNED = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT")
_UNSIGNED = ("UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT")
_FLOATS = ("FLOAT", "DOUBLE")
_INT_DIGITS = dict(zip(_SIGNED + _UNSIGNED, (3, 5, 10, 19, 39, 3, 5, 10, 20, 39), strict=True))
_DECIMAL_RE = re.compile(r"^DECIMAL\((\d+),\s*(\d+)\)$")
_STRINGY = ("UUID", "DATE", "TIME", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE")


def _numeric_supertype(a: str, b: str) -> str | None:
    """The narrowest type holding both numeric types, or None if one is not numeric."""
    da, db_ = _DECIMAL_RE.match(a), _DECIMAL_RE.match(b)
    known = set(_SIGNED + _UNSIGNED + _FLOATS)
    if not ((a in known or da) and (b in known or db_)):
        return None
    if a == b:
        return a
    if a in _FLOATS or b in _FLOATS:
        return "FLOAT" if a == b == "FLOAT" else "DOUBLE"
    if da or db_:
        p1, s1 = (int(da[1]), int(da[2])) if da else (_INT_DIGITS[a], 0)
        p2, s2 = (int(db_[1]), int(db_[2])) if db_ else (_INT_DIGITS[b], 0)
        scale = max(s1, s2)
        precision = max(p1 - s1, p2 - s2) + scale
        return f"DECIMAL({precision},{scale})" if precision <= 38 else "DOUBLE"
    if (a in _SIGNED) == (b in _SIGNED):
        family = _SIGNED if a in _SIGNED else _UNSIGNED
        return max(a, b, key=family.index)
    signed, unsigned = (a, b) if a in _SIGNED else (b, a)
    # An unsigned integer fits the signed type one size up.
    rank = max(_SIGNED.index(signed), _UNSIGNED.index(unsigned) + 1)
    return _SIGNED[rank] if rank < len(_SIGNED) else "DOUBLE"


class _Conflict(Exception):
    def __init__(self, path: str, old: _Type, new: _Type) -> None:
        super().__init__(path)
        self.path, self.old, self.new = path, old, new


def _merge(old: _Type, new: _Type, path: str) -> _Type:
    """The type that holds values of both ``old`` (the table's) and ``new`` (the file's)."""
    if old == new or new.kind == "null":
        return old
    if new.kind == "json" and old.kind != "null":
        return old
    if old.kind == "null":
        return new
    if old.kind == "struct" and new.kind == "struct":
        fields = []
        for name, otype in old.children:
            ntype = new.field(name)
            fields.append(
                (name, otype if ntype is None else _merge(otype, ntype, f"{path}.{name}"))
            )
        known = {n.lower() for n, _ in old.children}
        fields.extend((n, t) for n, t in new.children if n.lower() not in known)
        return _struct(fields)
    if old.kind == "list" and new.kind == "list":
        return _list(_merge(old.child, new.child, f"{path}[]"))
    if old.kind == "map" and new.kind == "map":
        return _map(
            _merge(old.children[0][1], new.children[0][1], f"{path}{{key}}"),
            _merge(old.children[1][1], new.children[1][1], f"{path}{{value}}"),
        )
    if old.kind == "scalar" and new.kind == "scalar":
        if old.sql == "VARCHAR":
            return old
        widened = _numeric_supertype(old.sql, new.sql)
        if widened is not None:
            return _Type("scalar", widened)
    raise _Conflict(path, old, new)


def _fill(t: _Type, default: _Type | None) -> _Type:
    """``t`` with each node that carries no type information (NULL, or JSON from JSON lines
    inference over empty lists) replaced by ``default``'s type at the same path."""
    if default is None:
        return t
    if t.kind in _PLACEHOLDER_KINDS:
        return default
    if t.kind == "struct" and default.kind == "struct":
        return _struct([(n, _fill(c, default.field(n))) for n, c in t.children])
    if t.kind == "list" and default.kind == "list":
        return _list(_fill(t.child, default.child))
    if t.kind == "map" and default.kind == "map":
        return _map(
            *(_fill(c, d) for (_, c), (_, d) in zip(t.children, default.children, strict=True))
        )
    return t


def _weaker(old: _Type, new: _Type) -> bool:
    """Whether history's ``old`` is less specific than the export's ``new`` somewhere: a
    placeholder (NULL, JSON) or a VARCHAR where the export has a real, other type. Such a
    column may hold a type a type-less first load guessed, which an empty history lets the
    export's real type replace."""
    if new.kind in _PLACEHOLDER_KINDS:
        return False
    if old.kind in _PLACEHOLDER_KINDS:
        return True
    if old.kind == "scalar" and old.sql == "VARCHAR":
        return new.kind != "scalar" or new.sql != "VARCHAR"
    if old.kind != new.kind or old.kind == "scalar":
        return False
    if old.kind == "struct":
        return any((o := old.field(n)) is not None and _weaker(o, c) for n, c in new.children)
    return any(_weaker(o, c) for (_, o), (_, c) in zip(old.children, new.children, strict=True))


def _concrete(t: _Type) -> _Type:
    """A type a column can be created with: NULL (nothing to go on) becomes VARCHAR."""
    if t.kind == "null":
        return _VARCHAR
    if t.kind == "struct":
        return _struct([(n, _concrete(c)) for n, c in t.children])
    if t.kind == "list":
        return _list(_concrete(t.child))
    if t.kind == "map":
        return _map(*(_concrete(c) for _, c in t.children))
    return t


def _json_read_type(file_t: _Type, table_t: _Type | None) -> _Type:
    """The type to read a JSON field as. Strings stay strings, even those DuckDB would guess
    to be UUID, DATE or TIMESTAMP (unless history already has that type); where inference had
    nothing to go on (all NULL, empty lists) the history type is used, else VARCHAR/JSON."""
    if file_t.kind in ("null", "json"):
        if table_t is not None:
            return table_t
        return _VARCHAR if file_t.kind == "null" else file_t
    if file_t.kind == "struct":
        sub = table_t if table_t is not None and table_t.kind == "struct" else None
        return _struct(
            [(n, _json_read_type(c, sub.field(n) if sub else None)) for n, c in file_t.children]
        )
    if file_t.kind == "list":
        sub = table_t.child if table_t is not None and table_t.kind == "list" else None
        return _list(_json_read_type(file_t.child, sub))
    if file_t.kind == "map":
        subs: list[_Type | None] = [None, None]
        if table_t is not None and table_t.kind == "map":
            subs = [table_t.children[0][1], table_t.children[1][1]]
        return _map(
            *(_json_read_type(c, s) for (_, c), s in zip(file_t.children, subs, strict=True))
        )
    if file_t.sql in ("VARCHAR", *_STRINGY):
        if table_t is not None and table_t.kind == "scalar" and table_t.sql in _STRINGY:
            return table_t
        return _VARCHAR
    return file_t


def _table_columns(conn: duckdb.DuckDBPyConnection, qualified: str) -> list[tuple[str, _Type]]:
    """A table's columns and their types (reads no row)."""
    rel = conn.sql(f"SELECT * FROM {qualified} LIMIT 0")
    return [(name, _from_duckdb(t)) for name, t in zip(rel.columns, rel.types, strict=True)]


def _holds_no_value(
    conn: duckdb.DuckDBPyConnection, captures: str, column: str, t: _Type, run_id: str
) -> bool:
    """Whether history's (``captures``, quoted) ``column`` is NULL (or an empty list) in every row of other runs than
    ``run_id`` (whose rows the load replaces)."""
    col = _q(column)
    value = f"{col} IS NOT NULL"
    if t.kind == "list":
        value += f" AND len({col}) > 0"
    elif t.kind == "map":
        value += f" AND cardinality({col}) > 0"
    row = conn.execute(
        f"SELECT NOT EXISTS (SELECT 1 FROM {captures} WHERE run_id IS DISTINCT FROM ? AND {value})",
        [run_id],
    ).fetchone()
    return bool(row and row[0])
