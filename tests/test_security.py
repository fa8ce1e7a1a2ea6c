"""Security and bad input: the key stays secret, paths and SQL stay where they belong, input is
checked before any call, and a hostile server can neither hang nor exhaust the process.

What other files already prove is referenced here, not repeated:

- test_client.py: a wrong key's 401 never echoes it (`test_wrong_key_is_an_auth_error_...`),
  Content-Disposition never picks the path (`test_content_disposition_never_decides_...`), the
  `max_export_bytes` cap (`test_export_larger_than_the_cap_is_cut_off`), a stalled (slow) answer
  stops at the read timeout (`test_read_timeout_is_retried_for_reads`), bad create arguments
  cost no request (`test_bad_input_fails_before_any_request`).
- test_models.py: export file names from the run id only, the client's repr.
- test_run_asset.py: the key in no event log entry of a failing run asset; bad definitions and
  bad run config cost no request.
- test_sources.py (`BAD_FILES`, `test_loading_makes_no_api_call`): malformed YAML, unknown
  fields, wrong types and negative budgets name the file, line, source and field, before any call.
"""

import contextlib
import itertools
import tracemalloc
import uuid
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster_duckdb import DuckDBResource

from extralt_dagster import (
    ExtraltAPIError,
    ExtraltClient,
    ExtraltConnectionError,
    ExtraltError,
    ExtraltExportError,
    ExtraltResource,
    ExtraltValidationError,
    build_extralt_assets,
    warehouse,
)
from extralt_dagster.api import transport as transport_module
from extralt_dagster.api.models import validate_identifier
from extralt_dagster.emulator import write_captures
from extralt_dagster.emulator.state import ApiError
from extralt_dagster.schedules import build_extralt_schedule
from extralt_dagster.sources import SourcesFileError, load_extralt_definitions
from soak.verify import secret_occurrences

from .support import FAST_POLL, event_log_text, failure_messages, fast_extralt

SECRET = "sk-live-7f3c9a1e-DO-NOT-LEAK"
RUN = "/v0/extract/runs/*"
EXPORT = "/v0/extract/captures/export"


@pytest.fixture
def secret_emulator(make_emulator):
    return make_emulator(api_key=SECRET)


@pytest.fixture
def client(secret_emulator):
    with ExtraltClient(
        SECRET, secret_emulator.url, timeout=2, max_retries=0, rate_limit_per_minute=None
    ) as c:
        yield c


def completed_run(client, emulator, budget=5):
    run_id = client.create_run("rbt_shoes", budget=budget)
    with contextlib.suppress(ApiError):  # it may have finished already
        emulator.finish_run(run_id)
    return run_id


def exception_texts(exc: BaseException) -> str:
    """Everything an exception shows: str, repr, args, notes, attributes, and its causes."""
    parts = []
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts += [str(exc), repr(exc), *map(str, exc.args), *getattr(exc, "__notes__", [])]
        parts += [str(v) for v in vars(exc).values()]
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


# --- The key stays secret ----------------------------------------------------------------------


def test_the_key_is_in_no_event_log_storage_metadata_or_warehouse_file(
    secret_emulator, tmp_path, monkeypatch
):
    """A whole pipeline with failures on the way, the key given as `dg.EnvVar` (as documented):
    then every byte Dagster and DuckDB wrote is searched, compressed snapshots included."""
    monkeypatch.setenv("EXTRALT_API_KEY", SECRET)
    home = tmp_path / "dagster_home"
    home.mkdir()
    warehouse_path = tmp_path / "warehouse.duckdb"
    resources = {
        "extralt": ExtraltResource(
            api_key=dg.EnvVar("EXTRALT_API_KEY"),
            base_url=secret_emulator.url,
            **FAST_POLL,
            max_retries=1,
        ),
        "duckdb": DuckDBResource(database=str(warehouse_path)),
    }
    exports = tmp_path / "exports"
    shoes = build_extralt_assets("shoes", "rbt_shoes", budget=20, export_dir=str(exports))
    books = build_extralt_assets("books", "rbt_books", budget=10, export_dir=str(exports))
    with dg.instance_for_test(temp_dir=str(home)) as instance:

        def materialize(assets, **faults):
            secret_emulator.set_faults(**faults)
            return dg.materialize(
                assets, instance=instance, resources=resources, raise_on_error=False
            )

        assert materialize(shoes).success
        # A server that echoes the key in its error body, a remote failure, a corrupt export.
        echo = f'{{"error": "Key {SECRET} rejected", "message": "bad key {SECRET}"}}'
        assert not materialize(
            books, wrong_body=echo, wrong_body_status=401, match="GET " + RUN
        ).success
        assert not materialize(books, fail_runs=True).success
        assert not materialize(shoes, export_corrupt=True).success
        assert materialize(books).success
        text = event_log_text(instance)
        messages = [
            e.dagster_event.step_failure_data.error.to_string()
            for run in instance.get_runs()
            for e in instance.all_logs(run.run_id)
            if e.dagster_event is not None and e.dagster_event.is_step_failure
        ]
    assert len(messages) >= 3 and "***" in text  # the failures happened, the echo was scrubbed
    assert SECRET not in text
    assert not any(SECRET in m for m in messages)
    hits, files, scanned = secret_occurrences(tmp_path, SECRET)
    assert hits == {}
    assert files > 5 and scanned > 100_000  # the instance's sqlite files and the warehouse
    assert warehouse_path.exists() and list(exports.iterdir()) == []


def test_reprs_and_every_error_hide_the_key(secret_emulator, client):
    resource = ExtraltResource(api_key=SECRET, base_url=secret_emulator.url)
    for shown in (repr(resource), str(resource), repr(client), repr(secret_emulator)):
        assert SECRET not in shown
    run_id = completed_run(client, secret_emulator)
    echo = f'{{"error": "Unauthorized {SECRET}", "message": "Bearer {SECRET} is not valid"}}'
    errors = []
    for status in (400, 401, 402, 403, 404, 409, 422, 429, 500, 503):
        secret_emulator.set_faults(wrong_body=echo, wrong_body_status=status, match="GET " + RUN)
        with pytest.raises(ExtraltAPIError) as info:
            client.get_run(run_id)
        errors.append(info.value)
    secret_emulator.set_faults(wrong_body=f"<html>{SECRET}</html>", wrong_body_status=502)
    with pytest.raises(ExtraltAPIError) as info:
        client.get_run(run_id)
    errors.append(info.value)
    with ExtraltClient("sk-wrong-" + SECRET[-8:], secret_emulator.url) as wrong:
        with pytest.raises(ExtraltAPIError) as info:
            wrong.get_run(run_id)
        errors.append(info.value)
    secret_emulator.clear_faults()
    for exc in errors:
        assert SECRET not in exception_texts(exc), exc
    assert "***" in str(errors[0])  # scrubbed, not dropped: the rest of the message survives


# --- Paths stay inside the target --------------------------------------------------------------


@pytest.mark.parametrize(
    "hint",
    [
        "../../{name}",
        "/tmp/{name}",
        "..\\..\\{name}",
        "..%2F..%2F{name}",
        "exports/../../{name}",
        "{name}" + "x" * 300,
    ],
    ids=["parent", "absolute", "backslashes", "encoded", "nested", "long"],
)
def test_content_disposition_cannot_write_outside_the_export_dir(
    emulator, instance, tmp_path, hint
):
    """The asset level (the client level is in test_client.py): a hostile filename hint never
    lands anywhere, and the export dir is empty afterwards."""
    name = f"escape-{uuid.uuid4().hex[:8]}.parquet"
    exports = tmp_path / "a" / "b" / "exports"
    assets = build_extralt_assets("shoes", "rbt_shoes", budget=10, export_dir=str(exports))
    emulator.set_faults(content_disposition_filename=hint.format(name=name))
    result = dg.materialize(
        assets,
        instance=instance,
        resources={
            "extralt": fast_extralt(emulator),
            "duckdb": DuckDBResource(database=str(tmp_path / "w.duckdb")),
        },
    )
    assert result.success
    assert list(exports.iterdir()) == []
    for place in (tmp_path, tmp_path / "a", exports.parent, Path("/tmp"), Path.cwd()):
        assert not list(place.glob(f"{name}*")), place


def test_a_hostile_run_id_cannot_steer_a_path_or_a_url(secret_emulator, client, tmp_path):
    secret_emulator.set_faults(wrong_body='{"id": "../../../etc/passwd"}', match="POST /v0/*")
    hostile = client.create_run("rbt_shoes", budget=5)
    secret_emulator.clear_faults()
    secret_emulator.clear_requests()
    with pytest.raises(ExtraltValidationError, match="run_id"):
        client.get_run(hostile)
    with pytest.raises(ExtraltValidationError, match="run_id"):
        client.stop_run(hostile)
    assert secret_emulator.count_requests() == 0  # refused before any request
    dest = tmp_path / "exports"
    dest.mkdir()
    with pytest.raises(ExtraltError):  # unknown to the API; still never a path of its own
        client.download_export(hostile, dest)
    assert list(tmp_path.rglob("*")) == [dest]


# --- SQL: names are identifiers, values are parameters -----------------------------------------

SQL_PAYLOADS = [
    "shoes; DROP TABLE extralt.runs; --",
    'shoes" ; DROP SCHEMA extralt CASCADE; --',
    "shoes') OR 1=1 --",
    "Shoes",
    "shoes\nsources",
]


@pytest.mark.parametrize(
    "payload", SQL_PAYLOADS, ids=[f"payload{i}" for i, _ in enumerate(SQL_PAYLOADS)]
)
@pytest.mark.parametrize("field", ["name", "schema"])
def test_sql_in_a_yaml_name_or_schema_is_refused_before_anything_runs(
    secret_emulator, tmp_path, payload, field
):
    warehouse_path = tmp_path / "w.duckdb"
    with duckdb.connect(str(warehouse_path)) as con:
        con.execute("CREATE SCHEMA extralt; CREATE TABLE extralt.runs (run_id VARCHAR)")
    quoted = payload.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    name = f'"{quoted}"' if field == "name" else "shoes"
    defaults = f'defaults: {{schema: "{quoted}"}}\n' if field == "schema" else ""
    path = tmp_path / "sources.yaml"
    path.write_text(f"{defaults}sources:\n  - name: {name}\n    robot_id: rbt_shoes\n")
    with pytest.raises(SourcesFileError) as info:
        load_extralt_definitions(
            path, duckdb_path=str(warehouse_path), base_url=secret_emulator.url
        )
    message = str(info.value)
    assert f"field {field}" in message and "[a-z][a-z0-9_]*" in message
    assert secret_emulator.count_requests() == 0
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM extralt.runs").fetchall() == [(0,)]


BAD_IDENTIFIERS = [*SQL_PAYLOADS, "1shoes", "", "a b", "shoes.x", "sh-oes", "x" * 64, None, 5]
IDENTIFIER_LAYERS = {
    "validate_identifier": (lambda v: validate_identifier(v, "name"), "name"),
    "assets_name": (lambda v: build_extralt_assets(v, "rbt_shoes"), "name"),
    "assets_schema": (lambda v: build_extralt_assets("shoes", "rbt_shoes", schema=v), "schema"),
    "schedule_source": (lambda v: build_extralt_schedule(v, "0 3 * * *"), "assets_or_name"),
    "target_source": (lambda v: warehouse.Target(source=v), "source name"),
    "target_schema": (lambda v: warehouse.Target(source="shoes", schema=v), "schema"),
}


@pytest.mark.parametrize("layer", IDENTIFIER_LAYERS)
@pytest.mark.parametrize(
    "value", BAD_IDENTIFIERS, ids=[f"bad{i}" for i, _ in enumerate(BAD_IDENTIFIERS)]
)
def test_every_layer_refuses_a_name_that_is_not_a_plain_identifier(layer, value):
    """Names become SQL identifiers and asset keys: one rule, at every entry point."""
    check, field = IDENTIFIER_LAYERS[layer]
    with pytest.raises(ExtraltValidationError) as info:
        check(value)
    if layer == "schedule_source" and not isinstance(value, str):
        assert str(info.value).startswith("assets_or_name must be the list build_extralt_assets")
        return
    assert str(info.value) == (
        f"{field} must be a lowercase identifier matching [a-z][a-z0-9_]* "
        f"(at most 63 characters), got {value!r}."
    )


def test_values_from_the_api_are_loaded_as_data_never_run_as_sql(tmp_path):
    """Run and robot ids, a column name, cell values and the file's path all come from outside;
    none of them can end a statement."""
    folder = tmp_path / "it's; DROP TABLE extralt.runs; --"
    folder.mkdir()
    path = folder / "export.parquet"
    write_captures(path, run_id="r", count=4)
    table = pq.read_table(path)
    evil_column = 'evil"; DROP TABLE extralt.runs; --'
    evil_value = "x'); DROP TABLE extralt.runs; --"
    table = table.append_column(evil_column, pa.array([evil_value] * table.num_rows))
    table = table.set_column(
        table.column_names.index("title"), "title", pa.array([evil_value] * table.num_rows)
    )
    pq.write_table(table, path)
    quoted_column = '"' + evil_column.replace('"', '""') + '"'
    run_id = "run_'); DROP TABLE extralt.runs; --"
    robot_id = 'rbt"; DELETE FROM extralt.runs; --'
    target = warehouse.Target(source="shoes")
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        for _ in range(2):  # a reload deletes this run's rows by parameter, and only those
            result = warehouse.load_export(
                con, path, target=target, run=warehouse.RunRecord(run_id, robot_id=robot_id)
            )
        assert result.rows == 4 and evil_column in result.columns_added + tuple(
            n for n, _ in result.column_types
        )
        assert con.execute("SELECT run_id, robot_id FROM extralt.runs").fetchall() == [
            (run_id, robot_id)
        ]
        [(rows, titles, evil)] = con.execute(
            f"SELECT count(*), count(DISTINCT title), min({quoted_column}) "
            "FROM extralt.shoes_captures WHERE run_id = ?",
            [run_id],
        ).fetchall()
        assert (rows, titles, evil) == (4, 1, evil_value)
        tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert {"runs", "shoes_captures", "shoes_variants"} <= tables


# --- base_url: https, except loopback ----------------------------------------------------------

REFUSED_URLS = [
    "http://api.extralt.com",
    "http://127.0.0.1.evil.example",
    "http://localhost.evil.example:8765",
    "http://127.0.0.1@evil.example",
    "http://evil.example#@127.0.0.1",
    "http://evil.example/?host=localhost",
    "http://0x7f000001",
    "ftp://127.0.0.1",
    "api.extralt.com",
    "//api.extralt.com",
    "javascript:alert(1)",
    "http://",
]
ALLOWED_URLS = [
    "https://api.extralt.com",
    "https://eu.api.extralt.example:8443/base",
    "http://127.0.0.1:8765",
    "http://127.9.9.9",
    "http://localhost:8765",
    "http://LOCALHOST",
    "http://[::1]:8765",
]


@pytest.mark.parametrize(
    "url", REFUSED_URLS, ids=[f"refused{i}" for i, _ in enumerate(REFUSED_URLS)]
)
def test_a_plain_http_or_malformed_base_url_is_refused_at_every_layer(url, tmp_path):
    with pytest.raises(ExtraltValidationError, match="base_url"):
        ExtraltClient(SECRET, url)
    with pytest.raises(ExtraltValidationError, match="base_url"):
        ExtraltResource(api_key=SECRET, base_url=url).make_client()
    path = tmp_path / "s.yaml"
    path.write_text("sources: [{name: shoes, robot_id: rbt_shoes}]\n")
    with pytest.raises(ExtraltValidationError, match="base_url") as info:
        load_extralt_definitions(path, duckdb_path=str(tmp_path / "w.duckdb"), base_url=url)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "url", ALLOWED_URLS, ids=[f"allowed{i}" for i, _ in enumerate(ALLOWED_URLS)]
)
def test_https_and_loopback_base_urls_are_accepted(url):
    ExtraltClient(SECRET, url).close()
    ExtraltResource(api_key=SECRET, base_url=url).make_client().close()


def test_a_redirect_is_not_followed_so_the_key_never_travels_elsewhere():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(307, headers={"location": "http://evil.example/steal"})

    with (
        ExtraltClient(
            SECRET, "https://api.extralt.com", transport=httpx.MockTransport(handler)
        ) as c,
        pytest.raises(ExtraltAPIError),
    ):
        c.get_run("run_1")
    assert [r.url.host for r in seen] == ["api.extralt.com"]


# --- Bad YAML costs nothing, and cannot run code -------------------------------------------------


def test_yaml_cannot_construct_python_objects(secret_emulator, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "s.yaml"
    path.write_text(
        "sources:\n  - name: shoes\n"
        f"    robot_id: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    with pytest.raises(SourcesFileError, match="line 3"):
        load_extralt_definitions(path, duckdb_path=str(tmp_path / "w.duckdb"))
    assert not marker.exists()
    assert secret_emulator.count_requests() == 0


def test_a_yaml_alias_bomb_fails_fast_naming_the_fields(tmp_path):
    """Nine levels of nine aliases: 387 million strings if anything expands them."""
    levels = "abcdefghij"
    lines = [f"{levels[0]}: &{levels[0]} [{', '.join(['lol'] * 9)}]"]
    for prev, cur in itertools.pairwise(levels):
        lines.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    lines.append("sources:\n  - {name: shoes, robot_id: rbt_shoes, start_urls: *j, tags: *j}")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    tracemalloc.start()
    try:
        with pytest.raises(SourcesFileError) as info:
            load_extralt_definitions(path, duckdb_path=str(tmp_path / "w.duckdb"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak  # nothing expanded the aliases (that would take gigabytes)
    message = str(info.value)
    assert "field start_urls" in message and "field tags" in message
    assert len(message) < 10_000


# --- A hostile or broken server can't hang or exhaust the process -------------------------------


@pytest.mark.parametrize(
    "endless",
    [
        {"endless_interval_seconds": None},  # a first chunk, then silence
        {"endless_interval_seconds": 0.05},  # a byte every 50 ms, forever: no read ever times out
    ],
    ids=["stalls", "trickles"],
)
def test_an_answer_that_never_ends_stops_at_the_request_timeout(secret_emulator, endless):
    with ExtraltClient(
        SECRET, secret_emulator.url, timeout=0.5, max_retries=1, sleep=lambda s: None
    ) as c:
        run_id = completed_run(c, secret_emulator)
        secret_emulator.set_faults(endless_body=True, match="GET " + RUN, **endless)
        with pytest.raises(ExtraltConnectionError, match=r"no complete answer") as info:
            c.get_run(run_id)
    # Each try ended at the request timeout (an endless body never ends by itself): exactly
    # two tries, an idempotent GET retried once, and the error says it was the timeout.
    assert info.value.cause_kind == "ReadTimeout"
    assert secret_emulator.count_requests("GET", RUN) == 2
    assert SECRET not in exception_texts(info.value)


def test_an_api_answer_larger_than_the_cap_is_refused(secret_emulator, client, monkeypatch):
    monkeypatch.setattr(transport_module, "MAX_RESPONSE_BYTES", 256 << 10)
    run_id = completed_run(client, secret_emulator)
    secret_emulator.set_faults(
        endless_body=True,
        endless_interval_seconds=0.0,
        endless_chunk_bytes=64 << 10,
        match="GET " + RUN,
    )
    with pytest.raises(ExtraltAPIError, match="more than 262,144 bytes"):
        client.get_run(run_id)


def test_an_endless_export_is_cut_at_max_export_bytes(secret_emulator, tmp_path):
    with ExtraltClient(
        SECRET, secret_emulator.url, max_export_bytes=2 << 20, rate_limit_per_minute=None
    ) as c:
        run_id = completed_run(c, secret_emulator)
        secret_emulator.set_faults(
            endless_body=True,
            endless_interval_seconds=0.0,
            endless_chunk_bytes=256 << 10,
            match="GET " + EXPORT,
        )
        with pytest.raises(ExtraltExportError, match="max_export_bytes"):
            c.download_export(run_id, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_stalled_export_stops_at_the_read_timeout_and_leaves_no_file(secret_emulator, tmp_path):
    with ExtraltClient(
        SECRET, secret_emulator.url, timeout=0.5, max_retries=1, sleep=lambda s: None
    ) as c:
        run_id = completed_run(c, secret_emulator)
        secret_emulator.set_faults(
            endless_body=True, endless_interval_seconds=None, match="GET " + EXPORT
        )
        with pytest.raises(ExtraltConnectionError) as info:
            c.download_export(run_id, tmp_path)
    assert info.value.cause_kind == "ReadTimeout"
    assert secret_emulator.count_requests("GET", EXPORT) == 2  # retried once, then given up
    assert list(tmp_path.iterdir()) == []


def test_the_captures_asset_stops_an_oversized_export_and_changes_nothing(
    emulator, instance, tmp_path
):
    exports = tmp_path / "exports"
    assets = build_extralt_assets("shoes", "rbt_shoes", budget=200, export_dir=str(exports))
    result = dg.materialize(
        assets,
        instance=instance,
        resources={
            "extralt": fast_extralt(emulator, max_export_bytes=4096),
            "duckdb": DuckDBResource(database=str(tmp_path / "w.duckdb")),
        },
        raise_on_error=False,
    )
    assert not result.success
    [message] = failure_messages(result)
    [run_id] = list(emulator.runs)
    assert run_id in message and "max_export_bytes" in message and "No table was changed" in message
    assert list(exports.iterdir()) == []
    assert not (tmp_path / "w.duckdb").exists()  # the load never started


WRONG_SHAPES = {
    "GET " + RUN: [
        '["not", "a", "run"]',
        "null",
        '"run_1"',
        '{"_id": 5, "status": "running"}',
        '{"_id": "run_1"}',
        '{"_id": "run_1", "status": "running", "extracted": "many"}',
        '{"_id": "run_1", "status": "completed", "createdAt": "yesterday"}',
        "<html>502 Bad Gateway</html>",
        "",
    ],
    "POST /v0/extract/runs": ['{"run": "run_1"}', "[]", '{"id": 7}', '{"id": ""}', "not json"],
    "POST /v0/extract/runs/*/restart": ['{"id": null}', '["run_1"]'],
    "GET /v0/extract/runs": [
        '{"rows": 5}',
        '{"rows": [1, 2]}',
        '{"items": [{"_id": "run_1"}]}',
        '{"rows": [], "nextCursor": {"page": 2}}',
        '{"rows": [], "nextCursor": 2}',
        "[]",
    ],
}


@pytest.mark.parametrize(
    ("match", "body"),
    [(m, b) for m, bodies in WRONG_SHAPES.items() for b in bodies],
    ids=[f"shape{i}" for i, _ in enumerate(b for bodies in WRONG_SHAPES.values() for b in bodies)],
)
def test_a_json_body_of_the_wrong_shape_is_an_api_error(secret_emulator, client, match, body):
    """Over real HTTP, for every endpoint that parses JSON (test_client.py only monkeypatches)."""
    run_id = completed_run(client, secret_emulator)
    secret_emulator.set_faults(wrong_body=body, match=match)
    call = {
        "GET " + RUN: lambda: client.get_run(run_id),
        "POST /v0/extract/runs": lambda: client.create_run("rbt_shoes", budget=5),
        "POST /v0/extract/runs/*/restart": lambda: client.restart_run(run_id),
        "GET /v0/extract/runs": lambda: client.list_runs(),
    }[match]
    with pytest.raises(ExtraltAPIError):  # never a KeyError, TypeError or AttributeError
        call()


def test_a_wrong_shape_error_body_is_still_a_typed_error(secret_emulator, client):
    run_id = completed_run(client, secret_emulator)
    for body, status in (('["x"]', 500), ('{"error": {"nested": 1}}', 404), ("", 429)):
        secret_emulator.set_faults(wrong_body=body, wrong_body_status=status, match="GET " + RUN)
        with pytest.raises(ExtraltAPIError) as info:
            client.get_run(run_id)
        assert info.value.status_code == status
