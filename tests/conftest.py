"""Shared pytest fixtures."""

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from extralt_dagster.emulator import Emulator

# tests/e2e drives `dagster dev` and a browser: `make e2e` runs it (`pytest tests/e2e`).
# `make test` and a bare `pytest` skip it; naming the folder on the command line still runs it.
collect_ignore = ["e2e"]

# `make mutate` (TESTING.md): mutmut runs the tests that cover a mutant and stops at the first
# failure, so the quick, specific files go first and a mutant dies in seconds.
_MUTATION_ORDER = [
    "test_run_handler.py",
    "test_models.py",
    "test_schedules.py",
    "test_client.py",
    "test_load_guards.py",
    "test_warehouse.py",
    "test_run_asset.py",
    "test_security.py",
    "test_captures_asset.py",
]


# `make test` (pytest-xdist): the files whose tests run for tens of seconds to minutes start
# first, so no worker is left with the CI-sized soak when the rest is done.
_LONGEST_FIRST = ["test_soak.py", "test_demo.py", "test_component.py", "test_termination.py"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    order = _MUTATION_ORDER if os.environ.get("MUTANT_UNDER_TEST") else _LONGEST_FIRST
    rank = {name: i for i, name in enumerate(order)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("extralt")
    group.addoption(
        "--export-seeds",
        type=int,
        default=None,
        help="tests/test_export_properties.py: run seeds 1..N instead of its fixed few "
        "(`make fuzz SEEDS=N`).",
    )
    group.addoption(
        "--export-seed",
        type=int,
        default=None,
        help="tests/test_export_properties.py: replay this one seed.",
    )


# --- The Extralt emulator -----------------------------------------------------------------

#: Fast enough that a 20-capture run (2 s starting + 1 s extracting) takes 3 ms of real time.
EMULATOR_DEFAULTS: dict[str, Any] = {"speed": 1000.0, "rate_limit": None}


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., Emulator]]:
    """Start emulators with custom settings (`make_emulator(speed=0, rate_limit=(60, 3))`);
    all are stopped at teardown."""
    started: list[Emulator] = []

    def make(**kwargs: Any) -> Emulator:
        emu = Emulator(**{**EMULATOR_DEFAULTS, **kwargs}).start()
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()


@pytest.fixture
def emulator(request: pytest.FixtureRequest, make_emulator: Callable[..., Emulator]) -> Emulator:
    """A running emulator on a free port. Override settings with
    `@pytest.mark.parametrize("emulator", [{"speed": 0}], indirect=True)`."""
    return make_emulator(**getattr(request, "param", {}))


# --- Dagster ------------------------------------------------------------------------------


@pytest.fixture
def instance(tmp_path):
    """A persistent (sqlite, on-disk) Dagster instance, so run tags and events are real."""
    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst
