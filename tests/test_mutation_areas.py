"""`make mutate` keeps mutating the logic TESTING.md scores, after code moves.

mutmut names a mutant after its function (`pkg.mod.x_func__mutmut_3`, or `pkg.mod.xǁClassǁmethod__mutmut_3`
for a method). A pattern naming a function that moved or was renamed matches nothing, and its
area's score silently stops covering that code: these checks fail instead.
"""

import ast
import tomllib
from pathlib import Path

import pytest

from tests import mutation_areas

ROOT = Path(__file__).resolve().parents[1]


def _modules(area: str) -> list[str]:
    modules = mutation_areas.MODULES[area]
    return [modules] if isinstance(modules, str) else list(modules)


def _mutant_names(path: Path) -> set[str]:
    """The names mutmut gives the functions and methods of one file, with `*` for the number."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(f"{module}.x_{node.name}__mutmut_*")
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(f"{module}.xǁ{node.name}ǁ{item.name}__mutmut_*")
    return names


@pytest.mark.parametrize("area", sorted(mutation_areas.AREAS))
def test_each_pattern_names_a_function_of_its_areas_modules(area):
    files = [ROOT / m for m in _modules(area)]
    assert all(f.is_file() for f in files), f"{area}: a module is missing: {files}"
    functions = set().union(*(_mutant_names(f) for f in files))
    for pattern in mutation_areas.AREAS[area]:
        if pattern.endswith(".*"):  # a whole module
            module = pattern[:-2].replace(".", "/") + ".py"
            assert module in _modules(area), f"{area}: {pattern} is not one of its modules"
            continue
        assert pattern in functions, f"{area}: {pattern} names no function of {_modules(area)}"


@pytest.mark.parametrize("area", sorted(mutation_areas.AREAS))
def test_each_area_runs_test_files_that_exist(area):
    missing = [t for t in mutation_areas.TESTS[area] if not (ROOT / t).is_file()]
    assert mutation_areas.TESTS[area] and not missing, f"{area}: {missing}"


def test_the_project_config_mutates_the_areas_modules():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    areas = {m for area in mutation_areas.AREAS for m in _modules(area)}
    assert set(config["only_mutate"]) == areas


def test_an_area_config_narrows_mutmut_to_its_modules_and_tests():
    pyproject = (ROOT / "pyproject.toml").read_text()
    for area in mutation_areas.AREAS:
        narrowed = tomllib.loads(mutation_areas._area_config(pyproject, area))["tool"]["mutmut"]
        assert narrowed["only_mutate"] == _modules(area)
        assert narrowed["pytest_add_cli_args_test_selection"] == mutation_areas.TESTS[area]


def test_the_area_of_a_mutant_is_found_by_its_name():
    for area, patterns in mutation_areas.AREAS.items():
        example = patterns[0].replace("*", "1")
        assert mutation_areas.area_of(example) == area
