"""`observe_external_runs` in a sources file and the Component: which sensors are built, with
which interval and budget, and the errors for what cannot work. No API call is made."""

import textwrap

import pytest

from extralt_dagster import SourcesFileError, load_extralt_definitions
from extralt_dagster.naming import EXTERNAL_RUNS_SENSOR, captures_asset_key

from .test_sources import VALID


def load(tmp_path, text):
    path = tmp_path / "sources.yaml"
    path.write_text(textwrap.dedent(text))
    return load_extralt_definitions(path, duckdb_path=str(tmp_path / "w.duckdb"))


def sensors(defs):
    return {s.name: s for s in defs.sensors}


def targets(defs, name):
    """The asset keys a sensor's run requests may materialize."""
    repo = defs.get_repository_def()
    job = repo.get_job(repo.get_sensor_def(name).job_name)
    return job.asset_layer.selected_asset_keys


def test_the_reference_file_has_one_sensor_for_its_observing_source(tmp_path):
    defs = load_extralt_definitions(VALID, duckdb_path=str(tmp_path / "w.duckdb"))
    [sensor] = defs.sensors
    assert sensor.name == EXTERNAL_RUNS_SENSOR
    assert sensor.minimum_interval_seconds == 300
    assert sensor.default_status.value == "RUNNING"
    assert targets(defs, sensor.name) == {captures_asset_key("shoes")}
    assert "shoes" in sensor.description and "5 page(s)" in sensor.description


def test_no_source_observing_means_no_sensor(tmp_path):
    defs = load(
        tmp_path,
        """
        sources:
          - {name: shoes, robot_id: rbt_shoes}
        """,
    )
    assert list(defs.sensors) == []


def test_defaults_turn_it_on_for_every_source_and_a_source_can_turn_it_off(tmp_path):
    defs = load(
        tmp_path,
        """
        defaults: {observe_external_runs: true, observe_pages_per_tick: 2}
        sources:
          - {name: shoes, robot_id: rbt_shoes}
          - {name: books, robot_id: rbt_books}
          - {name: outdoor, robot_id: rbt_outdoor, observe_external_runs: false}
        """,
    )
    [sensor] = defs.sensors
    assert sensor.minimum_interval_seconds == 120
    assert "shoes, books" in sensor.description and "2 page(s)" in sensor.description
    assert "outdoor" not in sensor.description
    assert targets(defs, sensor.name) == {captures_asset_key(n) for n in ("shoes", "books")}


def test_sources_with_other_intervals_get_a_sensor_each(tmp_path):
    defs = load(
        tmp_path,
        """
        defaults: {observe_external_runs: true}
        sources:
          - {name: shoes, robot_id: rbt_shoes}
          - {name: books, robot_id: rbt_books, observe_interval_seconds: 3600}
        """,
    )
    found = sensors(defs)
    assert set(found) == {
        "extralt_external_runs_every_120s_sensor",
        "extralt_external_runs_every_3600s_sensor",
    }
    assert found["extralt_external_runs_every_3600s_sensor"].minimum_interval_seconds == 3600
    assert "books" in found["extralt_external_runs_every_3600s_sensor"].description


def test_two_observing_sources_of_one_robot_are_refused_naming_both(tmp_path):
    with pytest.raises(SourcesFileError) as failed:
        load(
            tmp_path,
            """
            sources:
              - {name: shoes, robot_id: rbt_shoes, observe_external_runs: true}
              - {name: shoes_sale, robot_id: rbt_shoes, observe_external_runs: true}
            """,
        )
    message = str(failed.value)
    assert "'shoes_sale' (sources[1]), field observe_external_runs" in message
    assert "'shoes' already watches robot rbt_shoes" in message


@pytest.mark.parametrize(
    ("line", "field", "says"),
    [
        ("observe_external_runs: yes please", "observe_external_runs", "valid boolean"),
        ("observe_interval_seconds: 5", "observe_interval_seconds", "from 30 to 86,400"),
        ("observe_interval_seconds: 60.5", "observe_interval_seconds", "valid integer"),
    ],
)
def test_bad_values_name_the_source_the_field_and_the_range(tmp_path, line, field, says):
    with pytest.raises(SourcesFileError) as failed:
        load(
            tmp_path,
            f"""
            sources:
              - name: shoes
                robot_id: rbt_shoes
                {line}
            """,
        )
    message = str(failed.value)
    assert f"source 'shoes' (sources[0]), field {field}" in message and says in message
    assert "line 5" in message


def test_pages_per_tick_is_a_defaults_setting_with_a_range(tmp_path):
    with pytest.raises(SourcesFileError, match=r"defaults, field observe_pages_per_tick.*1 to 100"):
        load(
            tmp_path,
            """
            defaults: {observe_pages_per_tick: 0}
            sources:
              - {name: shoes, robot_id: rbt_shoes}
            """,
        )


def test_the_demo_observes_the_robot_make_dev_schedules(tmp_path):
    from extralt_dagster.definitions import DEMO_SOURCES
    from extralt_dagster.demo import DEMO_SCHEDULED_ROBOT

    defs = load_extralt_definitions(DEMO_SOURCES, duckdb_path=str(tmp_path / "w.duckdb"))
    [sensor] = defs.sensors
    assert sensor.name == EXTERNAL_RUNS_SENSOR and sensor.minimum_interval_seconds == 30
    assert DEMO_SCHEDULED_ROBOT == "rbt_books" and "for books" in sensor.description
    assert targets(defs, sensor.name) == {captures_asset_key("books")}


def test_the_component_builds_the_same_sensor(tmp_path, monkeypatch):
    from .test_component import load as load_component

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EXTRALT_DUCKDB_PATH", str(tmp_path / "w.duckdb"))
    attributes = {
        "defaults": {"observe_external_runs": True, "observe_interval_seconds": 600},
        "sources": [{"name": "shoes", "robot_id": "rbt_shoes"}],
    }
    with load_component(attributes) as (_, defs):
        [sensor] = defs.sensors
        assert (sensor.name, sensor.minimum_interval_seconds) == (EXTERNAL_RUNS_SENSOR, 600)
        assert targets(defs, sensor.name) == {captures_asset_key("shoes")}


def test_the_readme_block_watches_shoes_and_not_outdoor(tmp_path):
    import re
    from pathlib import Path

    readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    section = re.search(r"^### Runs started outside Dagster\n(.*?)(?=^### )", readme, re.M | re.S)
    assert section, "the README has no section 'Runs started outside Dagster'"
    (block,) = re.findall(r"```yaml\n(.*?)```", section.group(1), re.S)
    defs = load(tmp_path, block)
    [sensor] = defs.sensors
    assert sensor.minimum_interval_seconds == 120 and "5 page(s)" in sensor.description
    assert targets(defs, sensor.name) == {captures_asset_key("shoes")}
