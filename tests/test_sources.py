"""`load_extralt_definitions`: a YAML sources file becomes assets, schedules, jobs, resources;
every kind of mistake is reported with the file, line, source and field, before any API call."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from dagster_duckdb import DuckDBResource

from extralt_dagster import ExtraltResource, ExtraltValidationError, build_extralt_schedule
from extralt_dagster.naming import captures_asset_key, run_asset_key
from extralt_dagster.sources import SourcesFileError, load_extralt_definitions

from .support import failure_messages, fast_extralt

FIXTURES = Path(__file__).parent / "fixtures"
VALID = FIXTURES / "sources_valid.yaml"
CREATE = ("POST", "/v0/extract/runs")
DAGSTER = str(Path(sys.executable).parent / "dagster")


@pytest.fixture(autouse=True)
def _no_stray_files(tmp_path, monkeypatch):
    """Loading creates the DuckDB file's folder; keep that out of the working tree."""
    monkeypatch.chdir(tmp_path)


def write(tmp_path, text, name="sources.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def specs_by_key(defs):
    return {s.key: s for s in defs.resolve_all_asset_specs()}


def test_a_valid_file_loads_every_source(tmp_path, monkeypatch):
    monkeypatch.delenv("EXTRALT_BASE_URL", raising=False)
    defs = load_extralt_definitions(VALID, duckdb_path=str(tmp_path / "w.duckdb"))
    names = ["shoes", "books", "outdoor"]
    specs = specs_by_key(defs)
    assert set(specs) == {k(n) for n in names for k in (run_asset_key, captures_asset_key)}

    shoes_run, shoes_captures = specs[run_asset_key("shoes")], specs[captures_asset_key("shoes")]
    for spec in (shoes_run, shoes_captures):
        assert spec.group_name == "retail"  # the source's own group wins
        assert spec.owners == ["team:data"]
        assert spec.tags["tier"] == "gold"
    assert specs[run_asset_key("books")].group_name == "extralt"  # from defaults
    assert specs[run_asset_key("shoes")].metadata["extralt/budget"] == 200

    shoes = defs.resolve_schedule_def("extralt_shoes_schedule")
    assert (shoes.cron_schedule, shoes.execution_timezone) == ("0 3 * * *", "Europe/Paris")
    assert shoes.default_status == dg.DefaultScheduleStatus.RUNNING
    books = defs.resolve_schedule_def("extralt_books_schedule")
    assert (books.cron_schedule, books.execution_timezone) == ("30 4 * * 1", "UTC")
    assert books.default_status == dg.DefaultScheduleStatus.STOPPED  # the default
    assert {s.name for s in defs.schedules} == {"extralt_shoes_schedule", "extralt_books_schedule"}

    for name in names:
        job = defs.resolve_job_def(f"extralt_{name}_job")
        assert job.asset_layer.selected_asset_keys == {
            run_asset_key(name),
            captures_asset_key(name),
        }
        assert job.tags["extralt/source"] == name
    assert defs.resolve_job_def("extralt_job").asset_layer.selected_asset_keys == set(specs)
    assert shoes.job_name == "extralt_shoes_job"  # the schedule runs the source's job

    extralt, warehouse = defs.resources["extralt"], defs.resources["duckdb"]
    assert isinstance(extralt, ExtraltResource) and isinstance(warehouse, DuckDBResource)
    assert isinstance(extralt.api_key, dg.EnvVar) and extralt.api_key == "EXTRALT_API_KEY"
    assert extralt.base_url == "https://api.extralt.com"
    assert warehouse.database == str(tmp_path / "w.duckdb")


def test_environment_fills_what_arguments_leave_out(tmp_path, monkeypatch):
    monkeypatch.setenv("EXTRALT_BASE_URL", "http://127.0.0.1:9999")
    monkeypatch.setenv("EXTRALT_DUCKDB_PATH", str(tmp_path / "env" / "w.duckdb"))
    defs = load_extralt_definitions(VALID)
    assert defs.resources["extralt"].base_url == "http://127.0.0.1:9999"
    assert defs.resources["duckdb"].database == str(tmp_path / "env" / "w.duckdb")
    assert (tmp_path / "env").is_dir()  # DuckDB does not create folders

    explicit = load_extralt_definitions(
        VALID, duckdb_path=str(tmp_path / "x.duckdb"), base_url="https://eu.extralt.example"
    )
    assert explicit.resources["duckdb"].database == str(tmp_path / "x.duckdb")
    assert explicit.resources["extralt"].base_url == "https://eu.extralt.example"


def test_loading_makes_no_api_call(emulator, tmp_path):
    load_extralt_definitions(
        VALID, duckdb_path=str(tmp_path / "w.duckdb"), api_key="k", base_url=emulator.url
    )
    with pytest.raises(SourcesFileError):
        load_extralt_definitions(write(tmp_path, "sources: [{name: x}]"), base_url=emulator.url)
    assert emulator.count_requests() == 0


BAD_FILES = {
    "malformed_yaml": (
        """
        sources:
          - name: shoes
            robot_id: [rbt_shoes
        """,
        ["line 4", "malformed YAML"],
    ),
    "tab_indentation": ("sources:\n\t- name: shoes\n", ["line 2", "malformed YAML"]),
    "unknown_field": (
        """
        sources:
          - name: shoes
            robot_id: rbt_shoes
            bugdet: 5
        """,
        ["line 4", "source 'shoes' (sources[0])", "field bugdet", "Did you mean 'budget'?"],
    ),
    "unknown_top_level_field": (
        "source:\n  - name: shoes\n",
        ["field source", "Did you mean 'sources'?", "field sources: required"],
    ),
    "unknown_default": (
        "defaults: {tz: UTC}\nsources: [{name: shoes, robot_id: rbt_shoes}]\n",
        ["line 1", "defaults, field tz", "schema, group, timezone, lock_timeout_seconds"],
    ),
    "budget_as_string": (
        """
        sources:
          - name: shoes
            robot_id: rbt_shoes
            budget: "200"
        """,
        ["line 4", "source 'shoes' (sources[0])", "field budget", "valid integer", "'200'"],
    ),
    "budget_as_bool": (
        "sources: [{name: shoes, robot_id: rbt_shoes, budget: true}]",
        ["field budget", "valid integer"],
    ),
    "negative_budget": (
        """
        sources:
          - name: shoes
            robot_id: rbt_shoes
          - name: books
            robot_id: rbt_books
            budget: -5
        """,
        ["line 6", "source 'books' (sources[1])", "field budget", "positive", "-5"],
    ),
    "robot_id_not_a_string": (
        "sources: [{name: shoes, robot_id: 12}]",
        ["field robot_id", "valid string"],
    ),
    "missing_robot_id": (
        "sources:\n  - name: shoes\n",
        ["line 2", "source 'shoes' (sources[0])", "field robot_id", "required", "Add it"],
    ),
    "missing_name": (
        "sources:\n  - robot_id: rbt_shoes\n",
        ["sources[0], field name", "required"],
    ),
    "bad_name": (
        "sources: [{name: Shoes-EU, robot_id: rbt_shoes}]",
        ["field name", "[a-z][a-z0-9_]*", "'Shoes-EU'"],
    ),
    "duplicate_names": (
        """
        sources:
          - name: shoes
            robot_id: rbt_shoes
          - name: shoes
            robot_id: rbt_outdoor
        """,
        ["line 4", "source 'shoes' (sources[1])", "field name", "sources[0]", "unique"],
    ),
    "bad_url": (
        """
        sources:
          - name: shoes
            robot_id: rbt_shoes
            start_urls: [https://shoes.example/, "shoes.example/c/new"]
        """,
        ["line 4", "field start_urls", "start_urls[1]", "absolute http:// or https:// URL"],
    ),
    "empty_start_urls": (
        "sources: [{name: shoes, robot_id: rbt_shoes, start_urls: []}]",
        ["field start_urls", "omit it"],
    ),
    "bad_cron": (
        "sources: [{name: shoes, robot_id: rbt_shoes, cron: '0 3 * *'}]",
        ["field cron", "5-field cron"],
    ),
    "cron_field_out_of_range": (
        """
        sources:
          - name: shoes
            robot_id: rbt_shoes
            cron: "61 25 * * *"
        """,
        [
            "line 4",
            "source 'shoes' (sources[0]), field cron: cron '61 25 * * *' is not a valid cron "
            "expression: minute 61 is out of range (0-59); hour 25 is out of range (0-23).",
        ],
    ),
    "bad_source_schema": (
        "sources: [{name: shoes, robot_id: rbt_shoes, schema: Raw-EU}]",
        ["source 'shoes' (sources[0]), field schema", "'Raw-EU'"],
    ),
    "negative_lock_timeout": (
        "sources: [{name: shoes, robot_id: rbt_shoes, lock_timeout_seconds: -1}]",
        ["field lock_timeout_seconds", "0 or more", "got -1"],
    ),
    "lock_timeout_as_string": (
        "defaults: {lock_timeout_seconds: '30'}\nsources: [{name: shoes, robot_id: rbt_shoes}]",
        ["defaults, field lock_timeout_seconds", "valid number", "'30'"],
    ),
    "bad_timezone": (
        "sources: [{name: shoes, robot_id: rbt_shoes, cron: '@daily', timezone: Mars/Olympus}]",
        ["field timezone", "IANA time zone"],
    ),
    "bad_default_timezone": (
        "defaults: {timezone: Paris}\nsources: [{name: shoes, robot_id: rbt_shoes}]",
        ["defaults, field timezone", "IANA"],
    ),
    "bad_export_format": (
        "sources: [{name: shoes, robot_id: rbt_shoes, export_format: csv}]",
        ["field export_format", "'parquet' or 'jsonl'"],
    ),
    "negative_poll_timeout": (
        "sources: [{name: shoes, robot_id: rbt_shoes, poll_timeout_seconds: -1}]",
        ["field poll_timeout_seconds", "positive"],
    ),
    "bad_owner": (
        "sources: [{name: shoes, robot_id: rbt_shoes, owners: [data]}]",
        ["field owners", "owners[0]", "team:<name>"],
    ),
    "tag_value_not_a_string": (
        "sources: [{name: shoes, robot_id: rbt_shoes, tags: {tier: 1}}]",
        ["field tags.tier", "valid string"],
    ),
    "tag_key_dagster_rejects": (
        "sources: [{name: shoes, robot_id: rbt_shoes, tags: {'bad key!': x}}]",
        ["source 'shoes' (sources[0])", "tag keys", "bad key!"],
    ),
    "bad_group": (
        "sources: [{name: shoes, robot_id: rbt_shoes, group: retail-eu}]",
        ["field group", "letters, digits and underscores"],
    ),
    "duplicate_yaml_key": (
        """
        sources:
          - name: shoes
            robot_id: rbt_shoes
            budget: 10
            budget: 20
        """,
        ["line 5", "'budget' appears twice"],
    ),
    "no_sources": ("sources: []\n", ["field sources", "at least one source"]),
    "empty_file": ("", ["the file is empty", "sources:"]),
    "not_a_mapping": ("- name: shoes\n", ["expected a mapping", "list"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_each_mistake_names_the_file_source_and_field(tmp_path, case):
    text, fragments = BAD_FILES[case]
    path = write(tmp_path, text, name=f"{case}.yaml")
    with pytest.raises(SourcesFileError) as info:
        load_extralt_definitions(path, duckdb_path=str(tmp_path / "w.duckdb"))
    message = str(info.value)
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert isinstance(info.value, ValueError)


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(
        tmp_path,
        """
        sources:
          - name: shoes
            robot_id: rbt_shoes
            budget: 0
          - name: books
            robot_id: rbt_books
            cron: every day
        """,
    )
    with pytest.raises(SourcesFileError) as info:
        load_extralt_definitions(path)
    message = str(info.value)
    assert "2 problem(s)" in message
    assert message.index("line 4") < message.index("line 7")  # in file order
    assert "No Extralt API call was made" in message


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(SourcesFileError, match=r"nope\.yaml: cannot read"):
        load_extralt_definitions(tmp_path / "nope.yaml")


def test_dagster_definitions_validate_shows_the_message(tmp_path):
    bad = write(tmp_path, BAD_FILES["negative_budget"][0], name="bad.yaml")
    results = {}
    for label, sources in (("bad", bad), ("good", VALID)):
        module = tmp_path / f"{label}_defs.py"
        module.write_text(
            "from extralt_dagster.sources import load_extralt_definitions\n"
            f"defs = load_extralt_definitions({str(sources)!r}, duckdb_path='w.duckdb')\n"
        )
        results[label] = subprocess.run(
            [DAGSTER, "definitions", "validate", "-f", str(module)],
            cwd=tmp_path,
            env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    bad_out = results["bad"].stdout + results["bad"].stderr
    assert results["bad"].returncode != 0
    assert "SourcesFileError" in bad_out
    assert str(bad) in bad_out
    assert "source 'books' (sources[1]), field budget" in bad_out
    good = results["good"]
    assert good.returncode == 0, good.stdout + good.stderr


def test_a_declared_source_materializes_against_the_emulator(
    emulator, instance, tmp_path, monkeypatch
):
    path = write(
        tmp_path,
        """
        defaults:
          schema: raw
        sources:
          - name: shoes
            robot_id: rbt_shoes
            budget: 20
          - name: books
            robot_id: rbt_books
            budget: 5
        """,
    )
    monkeypatch.setenv("EXTRALT_API_KEY", emulator.api_key)  # read at run time, via dg.EnvVar
    warehouse = tmp_path / "w.duckdb"
    defs = load_extralt_definitions(path, duckdb_path=str(warehouse), base_url=emulator.url)
    result = defs.resolve_job_def("extralt_shoes_job").execute_in_process(instance=instance)
    assert result.success
    assert emulator.count_requests(*CREATE) == 1
    [run] = emulator.runs.values()
    assert (run.budget, run.status) == (20, "completed")
    assert instance.get_run_by_id(result.run_id).tags["extralt/source"] == "shoes"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        [(rows,)] = con.execute("select count(*) from raw.shoes_captures").fetchall()
    assert rows == 20


def test_resource_overrides_replace_resources_by_key(emulator, instance, tmp_path):
    path = write(tmp_path, "sources: [{name: books, robot_id: rbt_books, budget: 5}]")
    defs = load_extralt_definitions(
        path,
        duckdb_path=str(tmp_path / "w.duckdb"),
        resource_overrides={"extralt": fast_extralt(emulator)},
    )
    result = defs.resolve_job_def("extralt_job").execute_in_process(instance=instance)
    assert result.success
    assert emulator.count_requests(*CREATE) == 1


@pytest.mark.parametrize(
    ("cron", "problem"),
    [
        ("61 25 * * *", "minute 61 is out of range (0-59); hour 25 is out of range (0-23)"),
        ("0 3 0 * *", "day-of-month 0 is out of range (1-31)"),
        ("0 3 * 13 *", "month 13 is out of range (1-12)"),
        ("0 3 * * 8", "day-of-week 8 is out of range (0-7)"),
        ("5,61 * * * *", "minute 61 is out of range (0-59)"),
        ("1-70 * * * *", "minute 70 is out of range (0-59)"),
        (
            "x 3 * * *",
            "minute 'x' is not valid (use *, a number 0-59, a range such as 1-5, a list such "
            "as 1,15 or a step such as */15)",
        ),
        ("0 3 31 2 *", "day-of-month 31 never occurs in month 2"),
    ],
)
def test_a_bad_cron_field_is_named_in_the_file_and_by_build_extralt_schedule(
    tmp_path, cron, problem
):
    expected = f"{cron!r} is not a valid cron expression: {problem}. The 5 fields are minute"
    path = write(tmp_path, f"sources: [{{name: shoes, robot_id: rbt_shoes, cron: {cron!r}}}]")
    with pytest.raises(SourcesFileError) as info:
        load_extralt_definitions(path, duckdb_path=str(tmp_path / "w.duckdb"))
    assert f"field cron: cron {expected}" in str(info.value)
    with pytest.raises(ExtraltValidationError) as info:
        build_extralt_schedule("shoes", cron)
    assert str(info.value).startswith(f"cron_schedule {expected}")


@pytest.mark.parametrize("cron", ["0 3 * *", "0 3 * * * *", "daily"])
def test_a_cron_with_the_wrong_number_of_fields_says_so(cron):
    with pytest.raises(ExtraltValidationError) as info:
        build_extralt_schedule("shoes", cron)
    fields = len(cron.split())
    assert str(info.value) == (
        "cron_schedule must be a 5-field cron expression such as '0 3 * * *' (minute hour "
        "day-of-month month day-of-week) or @hourly, @daily, @weekly, @monthly; got "
        f"{cron!r} ({fields} field{'s' if fields != 1 else ''})."
    )


def load_against(emulator, path, tmp_path, monkeypatch):
    """(defs, warehouse file) of a sources file, talking to the emulator with its key."""
    monkeypatch.setenv("EXTRALT_API_KEY", emulator.api_key)  # read at run time, via dg.EnvVar
    warehouse = tmp_path / "w.duckdb"
    defs = load_extralt_definitions(path, duckdb_path=str(warehouse), base_url=emulator.url)
    return defs, warehouse


def test_schema_per_source_puts_each_sources_tables_in_its_schema(
    emulator, instance, tmp_path, monkeypatch
):
    path = write(
        tmp_path,
        """
        defaults:
          schema: staging
        sources:
          - name: shoes
            robot_id: rbt_shoes
            budget: 6
            schema: raw
          - name: books
            robot_id: rbt_books
            budget: 4
        """,
    )
    defs, warehouse = load_against(emulator, path, tmp_path, monkeypatch)
    result = defs.resolve_job_def("extralt_job").execute_in_process(instance=instance)
    assert result.success
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = set(
            con.execute("select schema_name || '.' || table_name from duckdb_tables()").fetchall()
        )
        shoes = con.execute("select count(*) from raw.shoes_captures").fetchone()
        books = con.execute("select count(*) from staging.books_captures").fetchone()
    assert (shoes, books) == ((6,), (4,))
    assert {("raw.shoes_captures",), ("staging.books_captures",)} <= tables
    assert not {("staging.shoes_captures",), ("raw.books_captures",)} & tables


def test_lock_timeout_seconds_reaches_each_sources_load(emulator, instance, tmp_path, monkeypatch):
    path = write(
        tmp_path,
        """
        defaults:
          lock_timeout_seconds: 0.3
        sources:
          - name: shoes
            robot_id: rbt_shoes
            budget: 3
            lock_timeout_seconds: 0
          - name: books
            robot_id: rbt_books
            budget: 3
        """,
    )
    defs, warehouse = load_against(emulator, path, tmp_path, monkeypatch)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys\ncon = duckdb.connect({str(warehouse)!r})\n"
            "print('locked', flush=True)\nsys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        results = {
            name: defs.resolve_job_def(f"extralt_{name}_job").execute_in_process(
                instance=instance, raise_on_error=False
            )
            for name in ("shoes", "books")
        }
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    for name, seconds in (("shoes", "0"), ("books", "0.3")):
        [message] = failure_messages(results[name])
        assert f"within {seconds} s" in message, message
        assert "w.duckdb" in message


def test_the_valid_fixture_sets_every_documented_field():
    """sources_valid.yaml is the README's reference: a new field must appear in it."""
    from extralt_dagster.sources import ExtraltSources, SourceDefaults, SourceSpec

    data = yaml.safe_load(VALID.read_text())
    assert set(data) == set(ExtraltSources.model_fields) - {"maintenance"}  # a lake's only
    used = set().union(*(source.keys() for source in data["sources"]))
    assert used == {f.alias or name for name, f in SourceSpec.model_fields.items()}
    assert set(data["defaults"]) == {
        f.alias or name for name, f in SourceDefaults.model_fields.items()
    }
