"""`make mutate`: mutation testing of the areas where money and data live, one area at a time.

    python -m tests.mutation_areas run [AREA ...]      # mutate and test; then the report
    python -m tests.mutation_areas report [AREA ...]   # killed / survived / timed out, per area
    python -m tests.mutation_areas patterns [AREA ...] # the mutant names, for `mutmut run`

The areas (TESTING.md): the client's create and retry path, the run step, the poll loop, the
warehouse load and the schedules. Each area runs in its own copy of the tree
(`mutants/<area>/`), with `[tool.mutmut]` narrowed to its module and to the test files that
exercise it, so mutmut's first pass (which records which test calls which function) and each
mutant's tests stay small enough for a 2-core machine.
"""

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

_C = "extralt_dagster.api.client."
_T = "extralt_dagster.api.transport."
_A = "extralt_dagster.assets.run."
_W = "extralt_dagster.warehouse.load."
_S = "extralt_dagster.sensors."
AREAS: dict[str, list[str]] = {
    "client": [
        f"{_C}xǁExtraltClientǁcreate_run__mutmut_*",
        f"{_C}xǁExtraltClientǁ_adopt_or_raise__mutmut_*",  # create_run's ambiguous half
        f"{_C}xǁExtraltClientǁfind_started_run__mutmut_*",
        f"{_C}xǁExtraltClientǁrestart_run__mutmut_*",
        f"{_C}x__id_from__mutmut_*",
        f"{_T}xǁTransportǁwith_retries__mutmut_*",
        f"{_T}xǁRetryPolicyǁdelay_for__mutmut_*",
        f"{_T}x__is_retryable__mutmut_*",
        f"{_T}x_maybe_reached_server__mutmut_*",
    ],
    "run_step": [
        f"{_A}xǁ_RunStepǁexecute__mutmut_*",
        f"{_A}xǁ_RunStepǁ_follow__mutmut_*",
        f"{_A}xǁ_RunStepǁ_resume__mutmut_*",
        f"{_A}xǁ_RunStepǁ_create__mutmut_*",
        f"{_A}xǁ_RunStepǁ_known_runs__mutmut_*",
        f"{_A}xǁ_RunStepǁ_already_materialized__mutmut_*",
        f"{_A}xǁ_RunStepǁ_finish__mutmut_*",
        f"{_A}xǁ_RunStepǁ_on_unexpected_failure__mutmut_*",
        f"{_A}xǁ_RunStepǁ_recorded__mutmut_*",
        f"{_A}xǁ_RunStepǁ_record__mutmut_*",
        # What _already_materialized asks: the run id of the source's newest materialization.
        "extralt_dagster.assets.metadata.x_latest_materialized_run_id__mutmut_*",
        "extralt_dagster.assets.metadata.x__latest_run_metadata__mutmut_*",
    ],
    "poll_loop": ["extralt_dagster.api.run_handler.*"],
    # load_export and the load's steps (one function each; `_load` runs them in order).
    "warehouse_load": [
        f"{_W}x_load_export__mutmut_*",
        f"{_W}x__begin__mutmut_*",
        f"{_W}x__commit__mutmut_*",
        f"{_W}x__load_error__mutmut_*",
        f"{_W}x__load__mutmut_*",
        f"{_W}x__prepare__mutmut_*",
        f"{_W}x__export_columns__mutmut_*",
        f"{_W}x__evolve__mutmut_*",
        f"{_W}x__history__mutmut_*",
        f"{_W}x__history_types__mutmut_*",
        f"{_W}x__variants__mutmut_*",
        f"{_W}x__products__mutmut_*",
        f"{_W}x__run_log__mutmut_*",
        f"{_W}x__run_log_row__mutmut_*",
        f"{_W}x__result__mutmut_*",
        f"{_W}xǁ_Clockǁlap__mutmut_*",
    ],
    "schedules": [
        "extralt_dagster.schedules.x_build_extralt_schedule__mutmut_*",
        "extralt_dagster.schedules.x__schedule__mutmut_*",  # the tick, for checked arguments
        "extralt_dagster.schedules.x__source_name__mutmut_*",
        "extralt_dagster.schedules.x_build_extralt_job__mutmut_*",
    ],
    # The external-runs sensor: what it loads once, what it leaves to Dagster, what it costs.
    "external_runs": [
        f"{_S}xǁ_Tickǁ_read_pages__mutmut_*",
        f"{_S}xǁ_Tickǁ_meet__mutmut_*",
        f"{_S}xǁ_Tickǁ_followed_by_dagster__mutmut_*",
        f"{_S}xǁ_Tickǁ_may_be_adopted__mutmut_*",
        f"{_S}xǁ_Tickǁ_unanswered_creates__mutmut_*",
        f"{_S}xǁ_Tickǁ_decide__mutmut_*",
        f"{_S}xǁ_Tickǁ_reported__mutmut_*",
        f"{_S}xǁSweepCursorǁend_sweep__mutmut_*",
        f"{_S}x__load_request__mutmut_*",
    ],
    # Credit caps: what counts as spent, the period, the refusal before any spending request.
    "credit_caps": [
        "extralt_dagster.credits.x_spent_in_period__mutmut_*",
        "extralt_dagster.credits.x_refusal__mutmut_*",
        "extralt_dagster.credits.xǁPeriodǁcontaining__mutmut_*",
        "extralt_dagster.credits.xǁLocationCapǁspent__mutmut_*",
        f"{_A}xǁ_RunStepǁ_guard_credits__mutmut_*",
        f"{_A}xǁ_RunStepǁ_refuse_past__mutmut_*",
        f"{_A}x__check_credit_limit__mutmut_*",
    ],
}
#: The files each area mutates (a list when its functions span several).
MODULES: dict[str, str | list[str]] = {
    "client": ["extralt_dagster/api/client.py", "extralt_dagster/api/transport.py"],
    "run_step": ["extralt_dagster/assets/run.py", "extralt_dagster/assets/metadata.py"],
    "poll_loop": "extralt_dagster/api/run_handler.py",
    "warehouse_load": "extralt_dagster/warehouse/load.py",
    "schedules": "extralt_dagster/schedules.py",
    "external_runs": "extralt_dagster/sensors.py",
    "credit_caps": ["extralt_dagster/credits.py", "extralt_dagster/assets/run.py"],
}
#: The test files each area's mutants run against (the ones that exercise the module).
TESTS = {
    "client": ["tests/test_client.py", "tests/test_security.py", "tests/test_run_asset.py"],
    "run_step": ["tests/test_run_asset.py"],
    "poll_loop": ["tests/test_run_handler.py", "tests/test_run_asset.py"],
    "warehouse_load": [
        "tests/test_load_guards.py",
        "tests/test_warehouse.py",
        "tests/test_export_types.py",
        "tests/test_export_shapes.py",
        "tests/test_captures_asset.py",
    ],
    "schedules": ["tests/test_schedules.py", "tests/test_security.py"],
    "external_runs": ["tests/test_external_runs_sensor.py"],
    "credit_caps": ["tests/test_credit_limit.py"],
}
ROOT = Path(__file__).resolve().parents[1]
_COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv*", "mutants", "__pycache__", "data", ".dagster_home", "e2e-artifacts", "*.duckdb"
)
#: mutmut's exit codes, grouped the way TESTING.md reports them.
_STATUS = {1: "killed", 3: "killed", 0: "survived", 33: "no tests", 5: "no tests", None: "not run"}
_TIMEOUT = {-24, 24, 152, 255, 36}


def status(exit_code: int | None) -> str:
    if exit_code in _TIMEOUT:
        return "timed out"
    return _STATUS.get(exit_code, "suspicious")


def results() -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for meta in (ROOT / "mutants").glob("*/mutants/extralt_dagster/**/*.py.meta"):
        out.update(json.loads(meta.read_text())["exit_code_by_key"])
    return out


def modules_of(area: str) -> list[str]:
    modules = MODULES[area]
    return [modules] if isinstance(modules, str) else list(modules)


def _area_config(pyproject: str, area: str) -> str:
    """The project's `[tool.mutmut]`, narrowed to one area's module and test files."""

    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(json.dumps(i) for i in items) + "]"

    section = re.search(r"^\[tool\.mutmut\]\n(.*?)(?=^\[)", pyproject, re.M | re.S)
    assert section, "pyproject.toml has no [tool.mutmut] section"
    body = section.group(1)
    body = re.sub(r"^only_mutate = \[.*?\]\n", "", body, flags=re.M | re.S)
    body = re.sub(r"^pytest_add_cli_args_test_selection = \[.*?\]\n", "", body, flags=re.M | re.S)
    body += f"only_mutate = {toml_list(modules_of(area))}\n"
    body += f"pytest_add_cli_args_test_selection = {toml_list(TESTS[area])}\n\n"
    return pyproject[: section.start(1)] + body + pyproject[section.end(1) :]


def run(areas: list[str]) -> int:
    mutmut = Path(sys.executable).with_name("mutmut")
    for area in areas:
        work = ROOT / "mutants" / area
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(ROOT, work, ignore=_COPY_IGNORE)
        pyproject = work / "pyproject.toml"
        pyproject.write_text(_area_config(pyproject.read_text(), area))
        head = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        (work / "MEASURED_AT").write_text(f"{head or 'not a git checkout'}\n")
        print(
            f"== {area}: {' '.join(modules_of(area))} against {' '.join(TESTS[area])}", flush=True
        )
        subprocess.run(
            [str(mutmut), "run", "--max-children", "2", *AREAS[area]], cwd=work, check=False
        )
    return report(areas)


def area_of(name: str) -> str | None:
    for area, patterns in AREAS.items():
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return area
    return None


def report(areas: list[str]) -> int:
    by_area: dict[str, Counter[str]] = {a: Counter() for a in areas}
    survivors: dict[str, list[str]] = {a: [] for a in areas}
    for name, code in sorted(results().items()):
        area = area_of(name)
        if area in by_area:
            by_area[area][status(code)] += 1
            if status(code) not in ("killed", "not run"):
                survivors[area].append(f"{status(code)}: {name}")
    print(
        f"{'area':<16}{'mutants':>8}{'killed':>8}{'survived':>9}{'timed out':>10}"
        f"{'not run':>8}{'other':>7}  killed%"
    )
    for area, counts in by_area.items():
        measured = ROOT / "mutants" / area / "MEASURED_AT"
        if measured.exists():
            print(f"  ({area} measured at {measured.read_text().strip()})")
        total = sum(counts.values())
        run = total - counts["not run"]
        other = run - counts["killed"] - counts["survived"] - counts["timed out"]
        score = f"{100 * counts['killed'] / run:.1f}" if run else "-"
        print(
            f"{area:<16}{total:>8}{counts['killed']:>8}{counts['survived']:>9}"
            f"{counts['timed out']:>10}{counts['not run']:>8}{other:>7}  {score}"
        )
    for area, names in survivors.items():
        if names:
            print(f"\n{area}: not killed")
            print("\n".join(f"  {n}" for n in names))
    return 0


def main(argv: list[str]) -> int:
    command, *areas = argv or ["report"]
    unknown = [a for a in areas if a not in AREAS]
    if unknown or command not in ("run", "patterns", "report"):
        print(f"usage: python -m tests.mutation_areas run|report|patterns [{'|'.join(AREAS)} ...]")
        return 2
    areas = areas or list(AREAS)
    if command == "patterns":
        print(" ".join(p for a in areas for p in AREAS[a]))
        return 0
    return run(areas) if command == "run" else report(areas)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
