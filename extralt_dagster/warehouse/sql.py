"""The SQL the load runs, built from the target's names and history's column types.

Fixed table definitions (the loader's own history columns, variants, the run log), the typed
expressions (a column as VARCHAR, DOUBLE, a TIMESTAMPTZ instant, the product key), the
variants insert; the products ranking is in ``latest``. Every builder takes names and types and returns text:
nothing here runs a statement.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .quote import _lit, _q
from .schema import DOCUMENTED_DESCRIPTIONS, _numeric_supertype, _Type
from .target import Target

__all__ = [
    "META_COLUMNS",
    "META_COLUMN_DESCRIPTIONS",
    "UNDOCUMENTED_COLUMN",
    "VARIANT_COLUMNS",
    "column_description",
]

#: The columns the loader adds to every history row, with their types.
META_COLUMN_TYPES: tuple[tuple[str, str], ...] = (
    ("run_id", "VARCHAR"),
    ("robot_id", "VARCHAR"),
    ("loaded_at", "TIMESTAMPTZ"),
    # The capture's row in its run's export (from 0): with run_id and loaded_at, what the
    # latest pointers name a capture by (``latest``).
    ("export_row", "BIGINT"),
)
#: Columns the loader adds to every history row; an export column of the same name is ignored.
META_COLUMNS: tuple[str, ...] = tuple(name for name, _ in META_COLUMN_TYPES)
#: What each of them holds, for the UI's Columns table.
META_COLUMN_DESCRIPTIONS: Mapping[str, str] = {
    "run_id": "Added by the loader: the Extralt run the capture came from.",
    "robot_id": "Added by the loader: the robot of that run.",
    "loaded_at": "Added by the loader: when the load that inserted the row committed.",
    "export_row": "Added by the loader: the capture's row in its run's export (from 0).",
}
UNDOCUMENTED_COLUMN = "Not in the API docs: loaded as the export typed it."


def column_description(name: str) -> str:
    """What a history column holds: the docs' word, the loader's, or that the docs omit it."""
    return (
        META_COLUMN_DESCRIPTIONS.get(name)
        or DOCUMENTED_DESCRIPTIONS.get(name.lower())
        or UNDOCUMENTED_COLUMN
    )


_BLANKS = "' ' || chr(9) || chr(10) || chr(13)"


def _key_sql(product_id: str, url: str) -> str:
    """A product's identity: ``product_id``, else ``url``; blank or empty is no identifier."""
    return (
        f"coalesce(nullif(trim({product_id}, {_BLANKS}), ''), nullif(trim({url}, {_BLANKS}), ''))"
    )


#: The variants table: fixed columns and types, in order. ``product_key`` (``product_id``, else
#: ``url``, blank counting as missing) is stored, computed by the insert once per capture: an
#: insert into a virtual generated column (earlier releases' table, ``GENERATED_KEY``) took
#: 9.2-9.6 s at 1M captures against 7.2-7.8 s stored (BENCHMARKS.md).
VARIANT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("product_key", "VARCHAR"),
    ("product_id", "VARCHAR"),
    ("group_id", "VARCHAR"),
    ("url", "VARCHAR"),
    ("title", "VARCHAR"),
    ("brand", "VARCHAR"),
    ("variant_id", "VARCHAR"),
    ("opt1", "VARCHAR"),
    ("opt2", "VARCHAR"),
    ("opt3", "VARCHAR"),
    ("gtin", "VARCHAR"),
    ("mpn", "VARCHAR"),
    ("price_amount", "DOUBLE"),
    ("full_amount", "DOUBLE"),
    ("currency", "VARCHAR"),
    ("in_stock", "BOOLEAN"),
    ("quantity", "BIGINT"),
    ("condition", "VARCHAR"),
    ("seller", "VARCHAR"),
    ("seller_type", "VARCHAR"),
    ("run_id", "VARCHAR"),
    ("extracted_at", "TIMESTAMPTZ"),
    # The offer's capture, as history names it: what ``<source>_current_variants`` joins on.
    ("loaded_at", "TIMESTAMPTZ"),
    ("export_row", "BIGINT"),
)
#: How earlier releases defined the variants table's ``product_key``: a virtual column. Such a
#: table keeps it, and the insert leaves it out (``_variants_insert_sql``'s ``stored_key``).
GENERATED_KEY = f"VARCHAR GENERATED ALWAYS AS ({_key_sql('product_id', 'url')}) VIRTUAL"
#: The run log, shared by the sources of a schema: one row per (source, run_id) loaded.
_RUNS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "VARCHAR"),
    ("source", "VARCHAR"),
    ("robot_id", "VARCHAR"),
    ("robot_name", "VARCHAR"),
    ("status", "VARCHAR"),
    ("extracted", "BIGINT"),
    ("credits", "BIGINT"),
    ("budget", "BIGINT"),
    ("created_at", "TIMESTAMPTZ"),
    ("started_at", "TIMESTAMPTZ"),
    ("duration_seconds", "DOUBLE"),
    ("dagster_run_id", "VARCHAR"),
    ("export_format", "VARCHAR"),
    ("rows_loaded", "BIGINT"),
    ("bytes_downloaded", "BIGINT"),
    ("loaded_at", "TIMESTAMPTZ"),
    # Last, where a migration adds it to a run log made before it (`load._migrate_run_log`).
    ("origin", "VARCHAR"),
)


def _scalar_expr(sql: str, t: _Type | None, target: str) -> str:
    """``sql`` (of type ``t``) as ``target``; NULL when it is missing or nested."""
    if t is None or t.kind not in ("scalar", "null", "json"):
        return f"NULL::{target}"
    if t.sql == target:
        return sql
    return f"TRY_CAST({sql} AS {target})"


def _path_expr(base: str, t: _Type | None, path: Sequence[str], target: str) -> str:
    """A field inside nested structs (``base.a.b``) as ``target``, NULL when any step is
    missing."""
    for name in path:
        if t is None or t.kind != "struct" or t.field(name) is None:
            return f"NULL::{target}"
        base = f"struct_extract({base}, {_lit(t.field_name(name))})"
        t = t.field(name)
    return _scalar_expr(base, t, target)


def _timestamp_expr(sql: str, t: _Type | None) -> str:
    """``extracted_at`` as TIMESTAMPTZ: epoch seconds (the export's form) or a timestamp."""
    if t is None or t.kind != "scalar":
        return "NULL::TIMESTAMPTZ"
    if _numeric_supertype(t.sql, "DOUBLE") is not None:
        # NaN, infinities and values outside years 1-9999 are no instant: NULL. A range test,
        # not try(): earlier releases' products view stored this SQL, and DuckDB 1.2 has no try().
        seconds = f"CAST({sql} AS DOUBLE)"
        return (
            f"CASE WHEN {seconds} BETWEEN {_FIRST_INSTANT} AND {_LAST_INSTANT} "
            f"THEN to_timestamp({seconds}) END"
        )
    return f"TRY_CAST({sql} AS TIMESTAMPTZ)"


#: Epoch seconds of 0001-01-01 and 9999-12-31T23:59:59 UTC: the instants extracted_at can be.
_FIRST_INSTANT = -62_135_596_800
_LAST_INSTANT = 253_402_300_799


def _product_key_expr(cols: Mapping[str, _Type]) -> str:
    """``product_id``, falling back to ``url``: the identity of a product; an empty or blank
    value is no identifier. The value of ``_key_sql``, with a fast path: a ``product_id``
    whose first and last characters are above the blanks (code points over 32) is its own
    key, passed on as it is, where ``trim`` writes a new string. At 1M captures that took the
    variants insert from 24.1-25.1 to 20.4-20.6 CPU-s (a plain copy of ``product_id``: 16-19)."""
    pid = _scalar_expr(_q("product_id"), cols.get("product_id"), "VARCHAR")
    url = _scalar_expr(_q("url"), cols.get("url"), "VARCHAR")
    return (
        f"CASE WHEN ascii({pid}) > 32 AND ascii(right({pid}, 1)) > 32 THEN {pid} "
        f"ELSE {_key_sql(pid, url)} END"
    )


def _variants_insert_sql(
    target: Target,
    cols: Mapping[str, _Type],
    *,
    stored_key: bool = True,
    where: str = "run_id = ?",
) -> str | None:
    """INSERT into the variants table of the variant offers of history's rows matching
    ``where`` (by default one run's, one ``?``), or None when history has no list-of-struct
    ``variants`` column to flatten. Reads history, not the export: the rows just inserted.
    ``stored_key=False`` leaves ``product_key`` out, for a table where it is generated."""
    vtype = cols.get("variants")
    if vtype is None or vtype.kind != "list" or vtype.child.kind != "struct":
        return None
    v = vtype.child
    otype = v.field("offers")
    o = otype.child if otype is not None and otype.kind == "list" else None
    o = o if o is not None and o.kind == "struct" else None
    captures = _capture_level_columns(cols)
    if stored_key:
        captures.insert(0, f"{_product_key_expr(cols)} AS product_key")
    return (
        f"INSERT INTO {target.variants} BY NAME\n"
        f"SELECT {', '.join(_offer_columns(o))} FROM (\n"
        f"  SELECT {', '.join(_variant_level_columns(v, has_offers=o is not None))} FROM (\n"
        f"    SELECT {', '.join(captures)}\n"
        f"    FROM {target.captures} WHERE {where}))"
    )


def _capture_level_columns(cols: Mapping[str, _Type]) -> list[str]:
    """Level 1 of the variants insert: one row per variant, capture columns computed once per
    capture."""

    def cap(name: str) -> str:
        return _scalar_expr(_q(name), cols.get(name), "VARCHAR")

    return [
        *(f"{cap(n)} AS {n}" for n in ("product_id", "group_id", "url", "title", "brand")),
        f"{cap('currency')} AS _capture_currency",
        f"{_timestamp_expr(_q('extracted_at'), cols.get('extracted_at'))} AS extracted_at",
        "run_id",
        "loaded_at",
        "export_row",
        f"unnest({_q('variants')}) AS _v",
    ]


def _variant_level_columns(v: _Type, *, has_offers: bool) -> list[str]:
    """Level 2: one row per offer of a variant (one with NULL offer fields when it has none)."""
    return [
        "* EXCLUDE (_v)",
        f"{_path_expr('_v', v, ['id'], 'VARCHAR')} AS variant_id",
        *(f"{_path_expr('_v', v, [n], 'VARCHAR')} AS {n}" for n in ("opt1", "opt2", "opt3")),
        f"{_path_expr('_v', v, ['identifiers', 'gtin'], 'VARCHAR')} AS gtin",
        f"{_path_expr('_v', v, ['identifiers', 'mpn'], 'VARCHAR')} AS mpn",
        (
            f"unnest(struct_extract(_v, {_lit(v.field_name('offers'))})) AS _o"
            if has_offers
            else "NULL AS _o"
        ),
    ]


def _offer_columns(o: _Type | None) -> list[str]:
    """Level 3: the offer's fields, flat, in the variants table's types."""
    return [
        "* EXCLUDE (_o, _capture_currency)",
        f"{_path_expr('_o', o, ['price', 'amount'], 'DOUBLE')} AS price_amount",
        f"{_path_expr('_o', o, ['price', 'full_amount'], 'DOUBLE')} AS full_amount",
        f"coalesce({_path_expr('_o', o, ['price', 'currency'], 'VARCHAR')}, _capture_currency)"
        " AS currency",
        f"{_path_expr('_o', o, ['availability', 'in_stock'], 'BOOLEAN')} AS in_stock",
        f"{_path_expr('_o', o, ['availability', 'quantity'], 'BIGINT')} AS quantity",
        *(
            f"{_path_expr('_o', o, [n], 'VARCHAR')} AS {n}"
            for n in ("condition", "seller", "seller_type")
        ),
    ]


def _ddl_columns(columns: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{_q(n)} {t}" for n, t in columns)
