"""Property: every export the docs allow loads correctly (issue 13, "Done when" item 3).

Each seed generates a source's sequence of runs, each a small export (Parquet or JSON lines)
derived from the emulator's captures by random changes the docs allow: documented columns
dropped, NULL everywhere or in some rows, lists emptied, product ids blank, unknown columns and
unknown nested fields added, runs short of what they extracted, runs with no captures, reloads
of a run. Nothing is renamed. Now and then an export changes `id` into a struct, which no
history can hold: that load must be refused, naming the column, and change nothing.

After every load, against a model kept in Python: history holds exactly the captures of the
exports so far (a reload replaces its run) with their values, products are the newest capture
per non-blank key, variants are the offers, documented columns have their documented types,
and the load's result, metadata and checks agree with the tables.

`make test` runs a few fixed seeds; `make fuzz SEEDS=200` (`--export-seeds=200`) runs many,
and `--export-seed=N` replays one.
"""

import copy
import functools
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extralt_dagster import warehouse
from extralt_dagster.assets.checks import (
    CHECK_DRIFT,
    CHECK_HAS_CAPTURES,
    CHECK_RUN_COUNT,
)
from extralt_dagster.assets.checks import check_results as _check_results
from extralt_dagster.assets.metadata import captures_metadata as _metadata
from extralt_dagster.emulator.datagen import CAPTURE_COLUMNS, read_captures
from extralt_dagster.warehouse import RunRecord, Target, WarehouseError, WarehouseSchemaError
from extralt_dagster.warehouse import quote as warehouse_quote
from tests.targets import TARGETS, target_conn

#: The seeds `make test` runs (each loads LOADS exports in a row).
DEFAULT_SEEDS = (1, 2, 3, 38)  # 38 alone makes every kind of change
LOADS = 7
T0 = 1_767_225_600.0
DAY = 86_400.0
SOURCE = Target("fuzz")
#: The documented scalar columns and the types history may give them: the documented type (a
#: placeholder from a type-less first run is not a type), or BIGINT for an INTEGER (JSON has
#: one integer type). Their values are compared row by row.
SCALAR_TYPES: dict[str, tuple[str, ...]] = {
    c: (t, "BIGINT") if t == "INTEGER" else (t,)
    for c, t in warehouse.DOCUMENTED_TYPES.items()
    if "(" not in t and "[" not in t
}
COMPARED = tuple(SCALAR_TYPES)
#: Unknown columns an export may gain, one fixed type each (a name never changes type).
UNKNOWN_COLUMNS: dict[str, Any] = {
    "rating": lambda r, i: round(1 + (i % 40) / 10, 1),
    "review_count": lambda r, i: i * 7,
    "badge": lambda r, i: ["new", "sale", None][i % 3],
    "tags": lambda r, i: [f"t{i % 4}", "x"][: i % 3],
    "seller_info": lambda r, i: {"name": f"s{i % 5}", "score": i / 10},
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" not in metafunc.fixturenames:
        return
    one = metafunc.config.getoption("--export-seed")
    many = metafunc.config.getoption("--export-seeds")
    seeds = [one] if one is not None else list(range(1, many + 1)) if many else DEFAULT_SEEDS
    metafunc.parametrize("seed", seeds)


# --- Generating exports ---------------------------------------------------------------------


@dataclass
class Export:
    run_id: str
    fmt: str
    path: Path
    rows: list[dict[str, Any]]  # what the file holds, as Python values
    extracted: int  # what the run document says
    refused: bool = False  # expected to be refused
    changes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (
            f"{self.run_id} {self.fmt} {len(self.rows)}/{self.extracted}: {', '.join(self.changes)}"
        )


def _base_rows(run_id: str, count: int, day: int) -> list[dict[str, Any]]:
    """The emulator's captures of a run, fresh to change (cached: generating takes ~0.3 s)."""
    return copy.deepcopy(_captures(run_id, count, day))


@functools.cache
def _captures(run_id: str, count: int, day: int) -> list[dict[str, Any]]:
    return read_captures(run_id=run_id, count=count, start=0, stop=count, started_at=T0 + day * DAY)


def generate(
    rng: random.Random, tmp: Path, index: int, earlier: list[str], *, can_refuse: bool
) -> Export:
    """One export: a fresh run, or a reload of an earlier run id, changed at random. With
    `can_refuse` (history has a VARCHAR `id`), it may turn `id` into a struct."""
    reload = earlier and rng.random() < 0.2
    run_id = rng.choice(earlier) if reload else f"run_{index}"
    count = rng.choice([0, 1, 3]) if rng.random() < 0.12 else rng.randint(5, 24)
    rows = _base_rows(run_id, count, day=index) if count else []
    fmt = rng.choice(["parquet", "jsonl"])
    changes: list[str] = []
    extracted = len(rows)
    n = len(rows)

    def some_rows() -> list[int]:
        return [i for i in range(n) if rng.random() < 0.4]

    if n:
        for column in CAPTURE_COLUMNS:
            if column == "id":
                continue  # a capture's identity: an export without it is not a capture
            roll = rng.random()
            if roll < 0.08:
                changes.append(f"drop {column}")
                for r in rows:
                    del r[column]
            elif roll < 0.16:
                changes.append(f"null {column}")
                for r in rows:
                    r[column] = None
            elif roll < 0.22:
                changes.append(f"null some {column}")
                for i in some_rows():
                    rows[i][column] = None
        if "variants" in rows[0] and rng.random() < 0.25:
            everywhere = rng.random() < 0.5
            changes.append("empty variants" + ("" if everywhere else " in some rows"))
            for i in range(n) if everywhere else some_rows():
                rows[i]["variants"] = []
        if "variants" in rows[0] and rng.random() < 0.2:
            changes.append("empty offers")
            for r in rows:
                for v in r["variants"] or []:
                    if rng.random() < 0.5:
                        v["offers"] = []
        if "options" in rows[0] and rng.random() < 0.15:
            changes.append("empty option values")
            for r in rows:
                if r["options"]:
                    r["options"]["opt1"]["values"] = []
        if "product_id" in rows[0] and rng.random() < 0.25:
            changes.append("blank product ids")
            for i in some_rows():
                rows[i]["product_id"] = rng.choice(["", "   "])
        for name, value in UNKNOWN_COLUMNS.items():
            if rng.random() < 0.15:
                changes.append(f"add {name}")
                for i, r in enumerate(rows):
                    r[name] = value(r, i)
        if "variants" in rows[0] and rng.random() < 0.3:
            changes.append("add offers[].warranty")
            for i, r in enumerate(rows):
                for v in r["variants"] or []:
                    for o in v["offers"] or []:
                        o["warranty"] = {"months": 12 + i % 3 * 12, "provider": "Care"}
        if "variants" in rows[0] and rng.random() < 0.2:
            changes.append("add variants[].weight_g")
            for r in rows:
                for v in r["variants"] or []:
                    v["weight_g"] = len(v["id"] or "") * 10
        if rng.random() < 0.15:
            cut = rng.randint(1, n)
            changes.append(f"short by {cut}")
            rows = rows[: n - cut]
    refused = can_refuse and bool(rows) and rng.random() < 0.1
    if refused:
        changes.append("id as a struct")
        for r in rows:
            r["id"] = {"value": r["id"]}
    path = tmp / f"{index:02d}-{run_id}.{fmt}"
    write_export(path, fmt, rows)
    return Export(run_id, fmt, path, rows, extracted, refused, changes or ["documented shape"])


def write_export(path: Path, fmt: str, rows: list[dict[str, Any]]) -> None:
    """As a writer that infers types from values would: an all-NULL column is type-less, an
    export of no captures has no columns (Parquet) or no lines (JSON)."""
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# --- The model ----------------------------------------------------------------------------------


@dataclass
class Model:
    """What the warehouse must hold: each run's rows as last loaded, and when."""

    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    loaded: dict[str, int] = field(default_factory=dict)  # run -> load sequence number
    extracted: dict[str, int] = field(default_factory=dict)

    def apply(self, export: Export, seq: int) -> None:
        self.runs[export.run_id] = export.rows
        self.loaded[export.run_id] = seq
        self.extracted[export.run_id] = export.extracted

    def captures(self) -> Counter:
        return Counter((run, r["id"]) for run, rows in self.runs.items() for r in rows)

    def products(self) -> dict[str, tuple[str, str]]:
        """Newest capture per non-blank key: extracted_at (NULL last), then the later load,
        then run id and capture id, descending (the products view's order)."""
        best: dict[str, tuple] = {}
        for run, rows in self.runs.items():
            for r in rows:
                key = product_key(r)
                if key is None:
                    continue
                at = r.get("extracted_at")
                rank = (at is not None, at or 0.0, self.loaded[run], run, r["id"])
                if key not in best or rank > best[key][0]:
                    best[key] = (rank, (run, r["id"]))
        return {k: v[1] for k, v in best.items()}

    def offers(self, run: str | None = None) -> Counter:
        out: Counter = Counter()
        for run_id, rows in self.runs.items():
            if run is not None and run_id != run:
                continue
            for r in rows:
                for v in r.get("variants") or []:
                    for o in (v or {}).get("offers") or []:
                        price = (o or {}).get("price") or {}
                        seller, amount = o.get("seller"), price.get("amount")
                        out[(run_id, v.get("id"), seller, amount, product_key(r))] += 1
        return out


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def product_key(row: dict[str, Any]) -> str | None:
    """`product_id`, else `url`; an empty or blank one is no key."""
    for name in ("product_id", "url"):
        if not _blank(row.get(name)):
            return row[name]
    return None


# --- Reading the warehouse ------------------------------------------------------------------


def everything(conn: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("captures", "products", "variants", "runs"):
        try:
            out[name] = conn.execute(
                f"SELECT * FROM {getattr(SOURCE, name)} ORDER BY ALL"
            ).fetchall()
        except duckdb.CatalogException:
            out[name] = None
    out["types"] = history_types(conn)
    return out


def history_types(conn: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return dict(
        conn.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = ? "
            "AND table_name = ? ORDER BY column_index",
            [SOURCE.schema, f"{SOURCE.source}_captures"],
        ).fetchall()
    )


def nested_type(conn, column: str) -> Any:
    try:
        rel = conn.sql(f"SELECT {warehouse_quote._q(column)} FROM {SOURCE.captures} LIMIT 0")
    except duckdb.Error:
        return None
    return rel.types[0]


def has_path(t: Any, path: str) -> bool:
    """Whether a nested type has the field at `path` ("variants[].offers[].warranty")."""
    steps = path.replace("[]", ".[]").split(".")[1:]
    for step in steps:
        if t is None:
            return False
        if step == "[]":
            if t.id != "list":
                return False
            t = t.children[0][1]
            continue
        if t.id != "struct":
            return False
        t = dict(t.children).get(step)
    return t is not None


# --- The property -----------------------------------------------------------------------------


def exports_for(seed: int, tmp: Path) -> list[Export]:
    """The seed's exports, in load order. A refused one loads nothing, so it neither makes a
    run id reloadable nor gives history its `id` column."""
    rng = random.Random(f"extralt-export-shapes:{seed}")
    exports: list[Export] = []
    for index in range(LOADS):
        loaded = [e for e in exports if not e.refused]
        earlier = list(dict.fromkeys(e.run_id for e in loaded))
        can_refuse = any(e.rows for e in loaded)
        exports.append(generate(rng, tmp, index, earlier, can_refuse=can_refuse))
    return exports


def _kind(change: str) -> str:
    """ "null some title" -> "null some", "add rating" -> "add rating", "drop url" -> "drop"."""
    words = change.split(" ")
    if words[0] == "add":
        return change
    if words[:2] == ["null", "some"] or words[0] in ("empty", "id"):
        return " ".join(words[:2])
    return words[0]


def test_the_fixed_seeds_make_every_kind_of_change(tmp_path):
    """`make test`'s few seeds still reach every branch of the generator."""
    kinds: Counter = Counter()
    for seed in DEFAULT_SEEDS:
        seen: set[str] = set()
        (tmp_path / str(seed)).mkdir()
        for e in exports_for(seed, tmp_path / str(seed)):
            kinds.update(_kind(c) for c in e.changes)
            kinds.update([e.fmt, *(["reload"] if e.run_id in seen else [])])
            kinds.update(["no captures"] if not e.rows else [])
            seen.add(e.run_id)
    wanted = {
        "drop", "null", "null some", "empty variants", "empty offers", "empty option",
        "blank", "short", "id as", "add offers[].warranty", "add variants[].weight_g",
        "jsonl", "parquet", "reload", "no captures",
        *(f"add {name}" for name in UNKNOWN_COLUMNS),
    }  # fmt: skip
    assert sorted(k for k in wanted if not kinds[k]) == []


@pytest.mark.parametrize("kind", TARGETS)
def test_every_documented_export_shape_loads_correctly(tmp_path, seed, kind):
    conn = target_conn(kind, tmp_path)
    model = Model()
    log: list[str] = []
    try:
        for index, export in enumerate(exports_for(seed, tmp_path)):
            log.append(export.describe())
            where = f"seed {seed}, load {index}:\n  " + "\n  ".join(log)
            before = everything(conn)
            types_before = {c: nested_type(conn, c) for c in before["types"]}
            run = RunRecord(export.run_id, robot_id="rbt_fuzz", extracted=export.extracted)
            try:
                result = warehouse.load_export(
                    conn, export.path, target=SOURCE, run=run, format=export.fmt
                )
            except WarehouseError as exc:
                assert export.refused, f"{where}\nrefused a documented shape: {exc}"
                assert isinstance(exc, WarehouseSchemaError) and exc.column == "id", where
                assert "'id'" in str(exc) and "Nothing was loaded" in str(exc), where
                assert everything(conn) == before, f"{where}\na refused load changed the tables"
                continue
            assert not export.refused, f"{where}\nloaded an export history cannot hold"
            model.apply(export, index)
            check_tables(conn, model, where)
            check_result(conn, model, export, result, before, types_before, where)
    finally:
        conn.close()


def check_tables(conn, model: Model, where: str) -> None:
    types = history_types(conn)
    # History: exactly the captures of the exports so far, with their values.
    if not types:
        assert not any(model.runs.values()), f"{where}\nno history table, but captures loaded"
        return
    stored = conn.execute(f"SELECT run_id, id FROM {SOURCE.captures}").fetchall()
    assert Counter(stored) == model.captures(), f"{where}\nhistory's captures"
    for column, allowed in SCALAR_TYPES.items():
        if column in types:
            assert types[column] in allowed, (
                f"{where}\nhistory's {column} is {types[column]}, not {' or '.join(allowed)}"
            )
    present = [c for c in COMPARED if c in types]
    select = ", ".join(warehouse_quote._q(c) for c in ("run_id", *present))
    by_capture = {
        (row[0], row[present.index("id") + 1]): dict(zip(present, row[1:], strict=True))
        for row in conn.execute(f"SELECT {select} FROM {SOURCE.captures}").fetchall()
    }
    for run, rows in model.runs.items():
        for r in rows:
            got = by_capture[(run, r["id"])]
            for column in present:
                assert got[column] == r.get(column), (
                    f"{where}\n{run}/{r['id']}: history's {column} is {got[column]!r}, the "
                    f"export's {r.get(column)!r}"
                )
    # Products: the newest capture per non-blank key.
    view = {
        key: (run, cid)
        for key, run, cid in conn.execute(
            f"SELECT product_key, run_id, id FROM {SOURCE.products}"
        ).fetchall()
    }
    assert view == model.products(), f"{where}\nproducts"
    # Variants: one row per offer.
    flat = Counter(
        conn.execute(
            f"SELECT run_id, variant_id, seller, price_amount, product_key FROM {SOURCE.variants}"
        ).fetchall()
    )
    assert flat == model.offers(), f"{where}\nvariants"
    # The run log: one row per run, the rows of its last load.
    logged = {
        run: (rows, extracted)
        for run, rows, extracted in conn.execute(
            f"SELECT run_id, rows_loaded, extracted FROM {SOURCE.runs} WHERE source = ?",
            [SOURCE.source],
        ).fetchall()
    }
    assert logged == {r: (len(rows), model.extracted[r]) for r, rows in model.runs.items()}, where


def check_result(conn, model: Model, export: Export, result, before, types_before, where: str):
    """The load's result, metadata and checks say what the tables hold."""
    rows = len(export.rows)
    total = sum(len(r) for r in model.runs.values())
    products = len(model.products())
    offers = model.offers()
    assert (result.rows, result.history_rows, result.products) == (rows, total, products), where
    assert result.variants == sum(offers.values()), where
    assert result.variants_for_run == sum(model.offers(export.run_id).values()), where
    assert result.runs_logged == len(model.runs), where
    assert result.duplicate_ids == 0 and result.extracted == export.extracted, where
    assert result.missing_captures == export.extracted - rows, where
    types_after = history_types(conn)
    assert dict(result.column_types) == types_after, where
    # Drift: every addition is new, every missing column or field is absent from the export.
    had = before["types"]
    for path in result.columns_added:
        column = path.split(".")[0].split("[")[0]
        if path == column:
            assert column in types_after and column not in had, f"{where}\nadded {path}"
        else:
            assert has_path(nested_type(conn, column), path), f"{where}\nadded {path}"
            assert not has_path(types_before.get(column), path), f"{where}\nadded {path}"
    exported = set(export.rows[0]) if export.rows else set()
    for path in result.columns_missing:
        column = path.split(".")[0].split("[")[0]
        assert column in had, f"{where}\nmissing {path}"
        if path == column:
            assert column not in exported, f"{where}\nmissing {path}"
    if export.rows and had:
        for column in had:
            if column not in exported and column not in warehouse.META_COLUMNS:
                assert column in result.columns_missing, f"{where}\n{column} not reported missing"
    # What Dagster shows: the metadata and the checks come from the same result.
    md = _metadata("wh.duckdb", SOURCE, result, 1, 0.0)
    assert md["dagster/row_count"] == rows and md["extralt/history_rows"] == total, where
    assert md["extralt/products"] == products and md["extralt/variants"] == result.variants, where
    assert [(c.name, c.type) for c in md["dagster/column_schema"].columns] == list(
        types_after.items()
    ), where
    assert md["extralt/columns_added"] == (", ".join(result.columns_added) or "none"), where
    assert md["extralt/missing_captures"] == export.extracted - rows, where
    checks = {c.check_name: c for c in _check_results(result, 0.05)}
    assert checks[CHECK_HAS_CAPTURES].passed == (rows > 0), where
    assert checks[CHECK_RUN_COUNT].passed == (rows == export.extracted), where
    assert checks[CHECK_DRIFT].passed == (not result.drifted), where
    logged_at = conn.execute(
        f"SELECT loaded_at FROM {SOURCE.runs} WHERE run_id = ?", [export.run_id]
    ).fetchone()[0]
    assert logged_at <= datetime.now(UTC), where
