"""Deterministic fake captures, written by DuckDB SQL so a million rows never sit in Python.

Capture `i` of a run is product `i` of the robot's catalogue: the product (title, brand, options,
identifiers) depends only on (seed, host, i), while prices, stock and ids depend on the run too, so
two runs of one robot overlap on products and give a price history.
"""

import math
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import duckdb

from .vocabulary import (
    ADJECTIVES,
    BRANDS,
    CLOSERS,
    FEATURES,
    MATERIALS,
    PARTS,
    PEOPLE,
    PLACES,
    QUALITIES,
    SELLERS,
    TIMES,
    USES,
    VERBS,
    profile_for,
)

#: The columns of a capture row, in order, as EXTRALT_API.md documents them.
CAPTURE_COLUMNS: tuple[str, ...] = (
    "id",
    "url",
    "extracted_at",
    "product_id",
    "group_id",
    "title",
    "subtitle",
    "brand",
    "description",
    "min_price",
    "max_price",
    "currency",
    "available",
    "sku_count",
    "image_url",
    "options",
    "variants",
)
#: Undocumented columns added when `extra_columns=True`.
EXTRA_COLUMNS: tuple[str, ...] = ("rating", "review_count")
#: The field every offer gains when `nested_field=True`: `variants[].offers[].warranty`.
NESTED_FIELD = "warranty"
#: Columns that are NULL in every row, with no type at all, when `typeless=True`: what a run
#: whose pages showed no prices, stock or options exports. Ids, keys, titles and variants stay.
TYPELESS_COLUMNS: tuple[str, ...] = (
    "subtitle",
    "description",
    "min_price",
    "max_price",
    "currency",
    "available",
    "sku_count",
    "image_url",
    "options",
)
FORMATS = ("parquet", "jsonl")
#: A fixed default window, so files made without one are byte-for-byte reproducible.
DEFAULT_STARTED_AT = 1_767_225_600.0  # 2026-01-01T00:00:00Z
MEMORY_LIMIT = "2GB"


@dataclass(frozen=True)
class Catalogue:
    """The shape of a robot's products: how many variants each has and how many offers each
    variant has. Capture `i` has `1..max_sizes` sizes times `1..max_colours` colours (uniform,
    capped by the category's vocabulary), and each variant the store's own offer plus on
    average `offers_per_variant - 1` marketplace offers. The default is the emulator's shape
    since issue 7: 3.0 variants and 3.75 offers per capture. Real catalogues differ: fashion
    has 20 to 50 variants per product (`FASHION`).
    """

    max_sizes: int = 3
    max_colours: int = 2
    offers_per_variant: float = 1.25

    def __post_init__(self) -> None:
        if self.max_sizes < 1 or self.max_colours < 1:
            raise ValueError("max_sizes and max_colours must be at least 1")
        if not 1 <= self.offers_per_variant <= 8:
            raise ValueError("offers_per_variant must be between 1 and 8")

    @property
    def variants_per_capture(self) -> float:
        """The mean, for a category whose vocabulary has enough sizes and colours."""
        return (1 + self.max_sizes) / 2 * (1 + self.max_colours) / 2

    @property
    def offers_per_capture(self) -> float:
        return self.variants_per_capture * self.offers_per_variant

    def key(self) -> str:
        """A short name for cache file names; "" for the default shape."""
        if self == Catalogue():  # not DEFAULT_CATALOGUE: defined below
            return ""
        return f"c{self.max_sizes}x{self.max_colours}x{self.offers_per_variant:g}"


#: The emulator's shape unless told otherwise.
DEFAULT_CATALOGUE = Catalogue()
#: A product of 4.0 variants and 7.0 offers.
BROAD = Catalogue(max_sizes=3, max_colours=3, offers_per_variant=1.75)
#: A fashion product: 25 variants (up to 9 sizes by 9 colours) and 30 offers.
FASHION = Catalogue(max_sizes=9, max_colours=9, offers_per_variant=1.2)


def _sentence() -> str:
    """One varied sentence from the 64-bit hash `h`: what makes descriptions differ.

    Each choice reads its own 6 bits of `h`, so a sentence costs one hash, not one per word.
    """

    def template(*parts: str | list[str] | int) -> str:
        out, shift = [], 3
        for part in parts:
            if isinstance(part, str):
                out.append(_lit(part))
                continue
            if isinstance(part, int):  # a number: 0..63 scaled
                out.append(f"(((h >> {shift}) % 64) * {part} + {part})::VARCHAR")
            else:
                out.append(_pick(part, f"(h >> {shift})"))
            shift += 6
        return "concat(" + ", ".join(out) + ")"

    templates = [
        template("The ", QUALITIES, " ", PARTS, " ", VERBS, " on ", PLACES, " ", TIMES, "."),
        template("Made with ", MATERIALS, " and ", FEATURES, ", it ", VERBS, " ", TIMES, "."),
        template(
            "Tested over ", 13, " km of ", PLACES, " by ", PEOPLE, ", who called it ",
            QUALITIES, " and ", QUALITIES, ".",
        ),
        template("Pair it with the ", ADJECTIVES, " ", QUALITIES, " range for ", USES, "."),
        template(
            "A ", QUALITIES, " ", PARTS, " and a ", QUALITIES, " ", PARTS, " weigh just ", 7, " g."
        ),
    ]  # fmt: skip
    cases = " ".join(f"WHEN {n} THEN {t}" for n, t in enumerate(templates))
    return f"CASE h % {len(templates)} {cases} END"


def _lit(value: str) -> str:
    """A SQL string literal; our ids and hosts are plain, but never trust that."""
    return "'" + str(value).replace("'", "''") + "'"


def _list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_lit(v) for v in values) + "]"


def _nullable(expr: str) -> str:
    """Keep DuckDB from marking a constant column REQUIRED in parquet: real exports don't, and
    pyarrow counts nullability as part of the schema when files are combined."""
    return f"CASE WHEN i >= 0 THEN {expr} END"


def _pick(values: list[str], hash_expr: str) -> str:
    return f"{_list(values)}[(1 + ({hash_expr}) % {len(values)})::BIGINT]"


def capture_select(
    *,
    run_id: str,
    count: int,
    start: int = 0,
    stop: int | None = None,
    seed: int = 0,
    host: str = "shoes.example",
    currency: str = "USD",
    store: str | None = None,
    started_at: float | None = None,
    ended_at: float | None = None,
    extra_columns: bool = False,
    drop_columns: Iterable[str] = (),
    source: str | None = None,
    nested_field: bool = False,
    typeless: bool = False,
    catalogue: Catalogue = DEFAULT_CATALOGUE,
) -> str:
    """The SELECT that yields captures `start..stop` of a `count`-capture run.

    Pseudo-randomness is `mix(...)` (a re-hashed DuckDB `hash`) of the seed, the product (host, i)
    or the run (run_id, i), so any slice of a run is the same rows as that slice of the whole run.
    `source` is a table with a column `i` to read instead of `range()`; a table scan runs on every
    core, while `range()` runs on one. `nested_field` gives every offer a `warranty` struct the
    docs do not list; `typeless` makes `TYPELESS_COLUMNS` untyped NULLs.
    """
    stop = count if stop is None else min(stop, count)
    start = max(0, min(start, stop))
    dropped = set(drop_columns)
    unknown = dropped - set(CAPTURE_COLUMNS) - set(EXTRA_COLUMNS)
    if unknown:
        raise ValueError(f"unknown capture columns to drop: {sorted(unknown)}")
    t0 = DEFAULT_STARTED_AT if started_at is None else float(started_at)
    t1 = t0 + count / 20.0 if ended_at is None else max(t0, float(ended_at))
    prof = profile_for(host)
    opt1_name, opt1_values = prof["opt1"]
    opt2_name, opt2_values = prof["opt2"]
    low, high = prof["price"]
    store = store or host.split(".")[0].title() + " Store"
    seed = int(seed)
    ph = f"mix({seed}, {_lit(host)}, i)"  # product-level
    rh = f"mix({seed}, {_lit(run_id)}, i)"  # run-level
    n1 = min(catalogue.max_sizes, len(opt1_values))
    n2 = min(catalogue.max_colours, len(opt2_values))

    description = (
        f"'The ' || title || ' from ' || brand || ' is made for ' || {_pick(USES, 'mix(hp, 11)')}"
        f" || '. ' || array_to_string(list_transform(list_transform(range((10 + mix(hp, 12) % 11)::BIGINT), lambda s: mix(hp, s)), lambda h: {_sentence()}), ' ')"
        f" || ' ' || {_pick(CLOSERS, 'mix(hp, 13)')}"
    )
    # Variant k (size k // n2, colour k % n2) costs a little more per size step; each
    # marketplace offer o (1, 2, ...) undercuts the store's own (0) by 5% more. Min and max
    # prices follow from that rule, without a pass over the nested structs.
    price = "(floor(base_price * drift * (1 + 0.04 * {step})) + 0.99)"
    extra = Fraction(catalogue.offers_per_variant - 1).limit_denominator(100)
    whole, part = math.floor(extra), extra - math.floor(extra)
    # Offers of variant k: 1 + whole, plus one more for a `part` share of variants.
    n_offers = f"({1 + whole} + (mix(hr, 30, k) % {part.denominator} < {part.numerator})::INTEGER)"
    most = 1 + whole + (1 if part else 0)

    def offer(o: int) -> str:
        """Offer `o` of variant `k`: the store's own (0) or a marketplace seller's (1, 2, ...)."""
        amount = f"{price.format(step='(k // n2)')} * {round(1 - 0.05 * o, 2)}"
        in_stock = f"mix(hr, 32, k, {o}) % 7 > 0"
        # The first marketplace offer's hashes predate more offers per variant: keep them.
        k = "k" if o < 2 else f"k, {o}"
        return (
            f"struct_pack(price := struct_pack(amount := round({amount}, 2), "
            f"full_amount := round({amount} * CASE WHEN mix(hr, 31, {k}) % 5 = 0 THEN 1.25 ELSE 1 END, 2), "
            f"currency := {_lit(currency)}), "
            f"availability := struct_pack(in_stock := {in_stock}, "
            f"quantity := CASE WHEN {in_stock} THEN (mix(hr, 33, k, {o}) % 60 + 1)::INTEGER ELSE 0 END), "
            + (
                "condition := 'new', seller := " + _lit(store) + ", seller_type := 'first_party'"
                if o == 0
                else f"condition := CASE WHEN mix(hr, 34, {k}) % 3 > 0 THEN 'new' ELSE 'refurbished' END, "
                f"seller := {_pick(SELLERS, f'mix(hr, 35, {k})')}, seller_type := 'marketplace'"
            )
            + (
                f", {NESTED_FIELD} := struct_pack(months := (12 * (1 + mix(hr, 36, k, {o}) % 3))::INTEGER, "
                "provider := 'Extralt Care')"
                if nested_field
                else ""
            )
            + ")"
        )

    # Explicit lists, not a nested lambda: capturing outer columns twice deep is slow.
    offers = (
        f"CASE {n_offers} "
        + " ".join(
            f"WHEN {c} THEN [{', '.join(offer(o) for o in range(c))}]"
            for c in range(1 + whole, most + 1)
        )
        + " END"
    )
    variants = (
        "list_transform(range(n1 * n2), lambda k: struct_pack("
        "id := product_id || '-' || (k + 1)::VARCHAR, "
        "opt1 := opt1_values[k // n2 + 1], "
        "opt2 := opt2_values[k % n2 + 1], "
        "identifiers := struct_pack("
        "gtin := (mix(hp, 40, k) % 9000000000000 + 1000000000000)::VARCHAR, "
        "mpn := mpn_prefix || (k + 1)::VARCHAR), "
        f"offers := {offers}))"
    )
    min_price = (
        f"list_min(list_transform(range(n1 * n2), lambda k: round({price.format(step='(k // n2)')}"
        f" * (1 - 0.05 * ({n_offers} - 1)), 2)))"
    )
    max_price = f"round({price.format(step='(n1 - 1)')}, 2)"
    columns: list[tuple[str, str]] = [
        (
            "id",
            "(left(m, 8) || '-' || substr(m, 9, 4) || '-4' || substr(m, 14, 3) || '-a' "
            "|| substr(m, 18, 3) || '-' || substr(m, 21, 12))",
        ),
        ("url", f"'https://' || {_lit(host)} || '/p/' || slug || '-' || (i + 1)::VARCHAR"),
        ("extracted_at", f"{t0!r} + {t1 - t0!r} * (i + (hr % 1000) / 1000.0) / {max(count, 1)}"),
        ("product_id", "product_id"),
        ("group_id", "group_id"),
        ("title", "title"),
        ("subtitle", f"CASE WHEN mix(hp, 5) % 33 = 0 THEN NULL ELSE {_pick(prof['subtitles'], 'mix(hp, 6)')} END"),
        ("brand", "brand"),
        ("description", description),
        ("min_price", f"CASE WHEN mix(hr, 7) % 100 = 0 THEN NULL ELSE {min_price} END"),
        ("max_price", max_price),
        ("currency", _nullable(_lit(currency))),
        ("available", "list_bool_or(list_transform(range(n1 * n2), lambda k: mix(hr, 32, k, 0) % 7 > 0))"),
        ("sku_count", "(n1 * n2)::INTEGER"),
        ("image_url", f"'https://cdn.' || {_lit(host)} || '/img/' || lower(to_hex(mix(hp, 70))) || '/' || product_id || '.jpg'"),
        (
            "options",
            _nullable(
                f"struct_pack(opt1 := struct_pack(name := {_lit(opt1_name)}, \"values\" := opt1_values), "
                f"opt2 := struct_pack(name := {_lit(opt2_name)}, \"values\" := opt2_values))"
            ),
        ),
        ("variants", variants),
        ("rating", "CASE WHEN mix(hp, 8) % 5 = 0 THEN NULL ELSE round(1 + (mix(hp, 9) % 400) / 100.0, 1) END"),
        ("review_count", "(mix(hp, 10) % 2500)::BIGINT"),
    ]  # fmt: skip
    wanted = CAPTURE_COLUMNS + (EXTRA_COLUMNS if extra_columns else ())
    if typeless:
        columns = [(n, "NULL" if n in TYPELESS_COLUMNS else e) for n, e in columns]
    select_list = ",\n  ".join(
        f"{expr} AS {name}" for name, expr in columns if name in wanted and name not in dropped
    )
    return f"""
WITH base AS (
  SELECT i, {ph} AS hp, {rh} AS hr,
    md5({_lit(run_id)} || ':' || i::VARCHAR) AS m,
    1 + (mix({ph}, 1) % {n1})::BIGINT AS n1,
    1 + (mix({ph}, 2) % {n2})::BIGINT AS n2,
    1 + (mix({ph}, 3) % {len(opt1_values)})::BIGINT AS o1,
    1 + (mix({ph}, 4) % {len(opt2_values)})::BIGINT AS o2
  FROM {source or f"range({start}, {stop}) t(i)"}
  WHERE i >= {start} AND i < {stop}
), prod AS (
  SELECT *,
    left(lower(to_hex(mix(hp, 56))), 12) AS product_id,
    'grp_' || left(lower(to_hex(mix({seed}, {_lit(host)}, i // 3, 57))), 10) AS group_id,
    {_pick(BRANDS, "mix(hp, 50)")} AS brand,
    {_pick(ADJECTIVES, "mix(hp, 51)")} AS adjective,
    {_pick(prof["nouns"], "mix(hp, 52)")} AS noun,
    ({low} + (mix(hp, 53) % 10000) / 10000.0 * {high - low}) AS base_price,
    (1 + ((mix({_lit(run_id)}, {seed}, 54) % 1000) / 1000.0 - 0.5) * 0.04
       + ((hr % 1000) / 1000.0 - 0.5) * 0.03) AS drift,
    list_transform(range(n1), lambda j: {_list(opt1_values)}[(o1 + j - 1) % {len(opt1_values)} + 1]) AS opt1_values,
    list_transform(range(n2), lambda j: {_list(opt2_values)}[(o2 + j - 1) % {len(opt2_values)} + 1]) AS opt2_values
  FROM base
), named AS (
  SELECT *,
    brand || ' ' || adjective || ' ' || noun || ' ' || ((mix(hp, 55) % 9) + 1)::VARCHAR AS title,
    lower(replace(adjective || '-' || noun, ' ', '-')) AS slug,
    upper(left(brand, 3)) || '-' || (mix(hp, 41) % 100000)::VARCHAR || '-' AS mpn_prefix
  FROM prod
)
SELECT
  {select_list}
FROM named
"""


def write_captures(
    path: str | os.PathLike[str],
    *,
    run_id: str,
    count: int,
    seed: int = 0,
    host: str = "shoes.example",
    format: str = "parquet",
    extra_columns: bool = False,
    drop_columns: Iterable[str] = (),
    currency: str = "USD",
    store: str | None = None,
    started_at: float | None = None,
    ended_at: float | None = None,
    stop: int | None = None,
    nested_field: bool = False,
    typeless: bool = False,
    no_columns: bool = False,
    catalogue: Catalogue = DEFAULT_CATALOGUE,
) -> Path:
    """Write `count` captures of `run_id` to `path` as parquet (zstd) or JSON lines.

    Deterministic for the arguments. Without `started_at`/`ended_at` the capture times sit in a
    fixed window starting 2026-01-01, at 20 captures per second. `stop` writes only captures
    `0..stop` of the run, the same rows as the whole run's first ones: a short export.
    `no_columns` writes a file of no captures as some writers do: a Parquet file with no columns
    at all (pyarrow's empty table), an empty JSON lines file.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if count < 0:
        raise ValueError("count must be >= 0")
    target = Path(path)
    rows = count if stop is None else max(0, min(int(stop), count))
    if no_columns and rows == 0:
        if format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist([]), target)
        else:
            target.write_bytes(b"")
        return target
    sql = capture_select(
        run_id=run_id,
        count=count,
        stop=rows,
        seed=seed,
        host=host,
        currency=currency,
        store=store,
        started_at=started_at,
        ended_at=ended_at,
        extra_columns=extra_columns,
        drop_columns=drop_columns,
        source="ids",
        nested_field=nested_field,
        typeless=typeless,
        catalogue=catalogue,
    )
    options = (
        "FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 100000"
        if format == "parquet"
        else "FORMAT json"
    )
    spill = Path(tempfile.mkdtemp(prefix=".duckdb-spill-", dir=target.parent))
    try:
        with _connect() as con:
            # Each thread buffers a whole row group before writing it: cap memory (2 GB keeps
            # 1M captures from spilling) and spill beside the target, never into the cwd.
            con.execute(f"SET memory_limit = {_lit(MEMORY_LIMIT)}")
            con.execute(f"SET temp_directory = {_lit(str(spill))}")
            con.execute(f"CREATE TEMP TABLE ids AS SELECT range AS i FROM range({rows})")
            con.execute(f"COPY ({sql}) TO {_lit(str(target))} ({options})")
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    if typeless and format == "parquet":
        _null_typed(target, TYPELESS_COLUMNS)
    return target


def _null_typed(path: Path, names: Iterable[str]) -> None:
    """Give the columns ``names`` Parquet's null type, as DuckDB 2.0 writes a column of untyped
    NULLs. DuckDB 1.x writes it as INTEGER, a type the run never had, which a reader cannot
    tell from a real one; a file DuckDB already wrote so is left as it is, byte for byte."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    untyped = set(names)
    source = pq.ParquetFile(path)
    schema = pa.schema(
        [pa.field(f.name, pa.null()) if f.name in untyped else f for f in source.schema_arrow]
    )
    if schema.equals(source.schema_arrow):
        source.close()
        return
    tmp = path.with_name(f".{path.name}.null-typed")
    try:
        with source, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for group in range(source.num_row_groups):
                table = source.read_row_group(group)
                columns = [
                    pa.nulls(table.num_rows, pa.null()) if n in untyped else table.column(n)
                    for n in table.column_names
                ]
                writer.write_table(pa.table(columns, schema=schema))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class ExportShape:
    """How one export departs from the documented shape: the emulator's export faults that
    still give a whole, valid file. The default is the documented shape."""

    extra_columns: bool = False
    drop_columns: tuple[str, ...] = ()
    nested_field: bool = False
    typeless: bool = False
    short_by: int = 0  # the run's last N captures are left out of the file
    no_columns: bool = False  # a file of no captures has no columns (pyarrow's empty table)

    def key(self) -> str:
        """A short name for the shape, for cache file names; "" for the documented shape."""
        parts = [
            "x" if self.extra_columns else "",
            ",".join(sorted(self.drop_columns)),
            "n" if self.nested_field else "",
            "t" if self.typeless else "",
            f"s{self.short_by}" if self.short_by else "",
            "0" if self.no_columns else "",
        ]
        return "" if not any(parts) else "|".join(parts)

    def write_options(self, count: int) -> dict[str, Any]:
        """The `write_captures` arguments that give this shape to a `count`-capture run."""
        return {
            "extra_columns": self.extra_columns,
            "drop_columns": self.drop_columns,
            "nested_field": self.nested_field,
            "typeless": self.typeless,
            "stop": max(0, count - self.short_by) if self.short_by else None,
            "no_columns": self.no_columns,
        }


def read_captures(
    *,
    run_id: str,
    count: int,
    start: int,
    stop: int,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Captures `start..stop` as JSON-ready dicts, for the paged `/captures` endpoint."""
    sql = capture_select(run_id=run_id, count=count, start=start, stop=stop, **kwargs)
    with _connect() as con:
        rel = con.sql(sql)
        names = rel.columns
        return [dict(zip(names, row, strict=True)) for row in rel.fetchall()]


def _connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with `mix`: `hash(a, b)` alone leaves `hash(a, 1)` and `hash(a, 2)`
    correlated in their low bits, so every value is hashed once more."""
    con = duckdb.connect()
    con.execute(
        "CREATE TEMP MACRO mix(a, b) AS hash(hash(a, b)), (a, b, c) AS hash(hash(a, b, c)), "
        "(a, b, c, d) AS hash(hash(a, b, c, d))"
    )
    return con
