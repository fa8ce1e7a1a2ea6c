"""The soak's invariants, checked after its last round, and the figures that show them.

1. Credits: Extralt runs created == materializations that needed one; no step retry and no
   re-execution created a second run. Extralt's scheduled runs are counted apart: created by
   Extralt as often as its schedule fired, none created (restarted, stopped) by Dagster.
2. Nothing left crawling: every Extralt run the soak caused is terminal at the end.
3. Nothing lost: every completed Extralt run is loaded, and history holds exactly its captures,
   once; products and variants agree with history. That includes the scheduled ones, loaded by
   the sensor (the run log says `origin` 'extralt', Dagster's runs 'dagster'); a failed
   scheduled run is loaded never and observed once.
4. Nothing half-done: no export file left behind; the DuckDB file opens, checkpoints and scans.
5. Every failure explained: each failed or retried step names the Extralt run (or the robot, when
   no run exists yet) and the cause; the API key appears nowhere the soak left a trace.
1b. The cap: one source has a `credit_limit` (`CAPPED_SOURCE`); the plan materializes it more
   often than the cap holds, so some of its materializations are refused. A refused one needs
   no Extralt run and is counted apart; each refusal sent no create or restart for the robot,
   failed its step once (no retry), and the source's Extralt spend stayed within the cap.
6. Every shape absorbed: a source served a type-less export (its first, in round 0) has the
   documented types wherever it has values; a nested field new to history was added and
   reported by its path.
"""

import contextlib
import itertools
import re
import sqlite3
import statistics
import tempfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import duckdb
import pyarrow.parquet as pq

from extralt_dagster import ExtraltClient
from extralt_dagster.api.models import TERMINAL_STATUSES
from extralt_dagster.emulator.datagen import NESTED_FIELD, TYPELESS_COLUMNS
from extralt_dagster.naming import (
    COLUMNS_ADDED_KEY,
    HOW_KEY,
    ORIGIN_KEY,
    RUN_ID_KEY,
    run_asset_key,
    run_id_tag,
)
from extralt_dagster.warehouse import DOCUMENTED_TYPES, Target, WarehouseError

from .config import (
    CAPPED_SOURCE,
    EMULATOR_RATE_LIMIT,
    EMULATOR_SPEED,
    SCHEDULE_EVERY_SECONDS,
    SCHEDULED_SOURCE,
    SENSOR_PAGES_PER_TICK,
    SOURCES,
    capped_source,
    captures_op,
    credit_limit,
    run_op,
)
from .plan import ALL_KINDS, Fault

if TYPE_CHECKING:
    from .run_soak import RoundResult, Soak

RUN_ID = re.compile(r"run_[0-9a-f]{24}")
ROBOT_SOURCE = {s.robot_id: s.name for s in SOURCES}
#: The run log, shared by every source of the schema.
RUN_LOG = Target(SOURCES[0].name).table_names["runs"]
STEP_SOURCE = {run_op(s.name): s.name for s in SOURCES} | {
    captures_op(s.name): s.name for s in SOURCES
}
#: Errors Dagster itself raises in a step, which cannot know the Extralt run.
DAGSTER_ERRORS = ("ChildProcessCrashException", "DagsterExecutionInterruptedError")
#: How a failure message says what happened: cause -> fragments, any of which names it.
CAUSES: dict[str, tuple[str, ...]] = {
    "credit_limit": ("refusing to start an Extralt run", "refusing to restart an Extralt run"),
    "the run failed remotely": ("failed: ",),
    "the run was stopped outside Dagster": ("stopped outside Dagster",),
    "the run outlived its poll timeout": ("poll_timeout_seconds",),
    "the Dagster run was terminated": ("DagsterExecutionInterruptedError",),
    "the step process was killed": ("ChildProcessCrashException",),
    "the export was unusable": ("is unusable",),
    "the export could not be downloaded": ("could not be downloaded",),
    "the DuckDB file was locked": ("is locked by another process",),
    "a create may have reached Extralt": ("may still start a run", "failed ambiguously"),
    "the API kept failing": ("returned 4", "returned 5", "no complete answer"),
}


def verify(soak: "Soak", *, seconds: float) -> tuple[dict[str, Any], list[str], str]:
    """Check every invariant; return (figures, violations, the report's text)."""
    check = _Checker(soak)
    check.credits()
    check.credit_cap()
    check.terminal()
    check.warehouse_whole()  # before any read-only connection: replays and checkpoints
    check.nothing_lost()
    check.scheduled_runs()
    check.failures_explained()
    check.key_nowhere()
    check.faults_landed()
    check.shapes_absorbed()
    if soak.lake is not None:
        check.analyst_whole_snapshots()
    check.figures["seconds"] = round(seconds, 1)
    return check.figures, check.violations, check.report()


class _Checker:
    def __init__(self, soak: "Soak") -> None:
        self.soak = soak
        self.emu = soak.emu
        self.instance = soak.instance
        self.runs = self.emu.runs  # the Extralt runs, by id
        self.figures: dict[str, Any] = {}
        self.violations: list[str] = []
        self.attempt_ids = [
            a.run_id for r in soak.results for a in r.attempts if a.run_id is not None
        ]
        #: The Dagster runs of the sensor's loads (re-executions too), checked like the rounds'.
        self.sensor_run_ids = [i for load in soak.scheduled.loads for i in load.run_ids]
        self.attempt_ids += self.sensor_run_ids
        self.scheduled = {i: v for i, v in self.runs.items() if self._is_scheduled(i)}
        self.logs = {run_id: self.instance.all_logs(run_id) for run_id in self.attempt_ids}
        self.refusals = self._refusals()

    def fail(self, message: str) -> None:
        self.violations.append(message)

    def _events(self, run_id: str, kind: dg.DagsterEventType) -> Iterable[dg.EventLogEntry]:
        return (
            e
            for e in self.logs[run_id]
            if e.dagster_event is not None and e.dagster_event.event_type == kind
        )

    def _is_scheduled(self, run_id: str) -> bool:
        """Created by Extralt's schedule, or a restart of such a run (which only Dagster makes)."""
        return self.runs[self._origin(run_id)].origin == "schedule"

    def _origin(self, run_id: str) -> str:
        while self.runs[run_id].restarted_from:
            run_id = self.runs[run_id].restarted_from  # type: ignore[assignment]
        return run_id

    # --- 1. Credits -------------------------------------------------------------------------

    def credits(self) -> None:
        dagsters = [v for v in self.runs.values() if v.id not in self.scheduled]
        created = [v for v in dagsters if v.restarted_from is None]
        restarts = [v for v in dagsters if v.restarted_from is not None]
        per_pair: dict[tuple[int, str], list[str]] = defaultdict(list)
        for view in created:
            result = self._round_at(view.created_at)
            source = ROBOT_SOURCE.get(view.robot_id)
            if result is None or source is None:
                self.fail(f"credits: Extralt run {view.id} was created outside every round")
                continue
            per_pair[(result.round.index, source)].append(view.id)
            if source not in result.round.sources:
                self.fail(
                    f"credits: round {result.round.index} created Extralt run {view.id} for "
                    f"{source}, which it does not materialize"
                )
        needed: set[tuple[int, str]] = set()
        for result in self.soak.results:
            for attempt in result.attempts:
                if attempt.run_id is None:
                    continue
                for e in self._events(attempt.run_id, dg.DagsterEventType.STEP_START):
                    if e.step_key in STEP_SOURCE and e.step_key.endswith("__run"):
                        needed.add((result.round.index, STEP_SOURCE[e.step_key]))
        # A materialization the cap refused before any run was created needs none.
        refused_pairs = {(r["round"], r["source"]) for r in self.refusals}
        refused_before_a_run = refused_pairs - set(per_pair)
        needed -= refused_before_a_run
        materialized = {
            (result.round.index, str(e.asset_materialization.asset_key.path[1]))
            for result in self.soak.results
            for attempt in result.attempts
            if attempt.run_id is not None
            for e in self._events(attempt.run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)
            if e.asset_materialization is not None
            and e.asset_materialization.asset_key.path[-1] == "run"
        }
        for pair, ids in sorted(per_pair.items()):
            if len(ids) > 1:
                self.fail(
                    f"credits: round {pair[0]} paid for {pair[1]} {len(ids)} times "
                    f"({', '.join(ids)}): a retry or re-execution created a second run"
                )
        for pair in sorted(needed - set(per_pair)):
            self.fail(f"credits: round {pair[0]} ran {pair[1]}'s run step but created no run")
        # The Dagster side agrees: every run tag points into the run it created (or its restart).
        for result in self.soak.results:
            for attempt in result.attempts:
                run = self.instance.get_run_by_id(attempt.run_id) if attempt.run_id else None
                for source in result.round.sources if run else ():
                    tagged = run.tags.get(run_id_tag(source))  # type: ignore[union-attr]
                    if tagged is None:
                        continue
                    expected = per_pair.get((result.round.index, source), [])
                    if tagged not in self.runs or self._origin(tagged) not in expected:
                        self.fail(
                            f"credits: Dagster run {attempt.run_id} records {tagged} for "
                            f"{source}, not the run its round created ({expected})"
                        )
        retries = sum(
            1
            for run_id in self.attempt_ids
            for e in self._events(run_id, dg.DagsterEventType.STEP_UP_FOR_RETRY)
            if (e.step_key or "").endswith("__run")
        )
        how = Counter(
            str(e.asset_materialization.metadata[HOW_KEY].value)
            for run_id in self.attempt_ids
            for e in self._events(run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)
            if e.asset_materialization is not None and HOW_KEY in e.asset_materialization.metadata
        )
        spent = sum(v.credits_used for v in dagsters)
        loaded = sum(v.credits_used for v in dagsters if v.true_status == "completed")
        api_created = self.emu.run_counts()["created"]["api"]
        if api_created != len(created):
            self.fail(f"credits: the API created {api_created} runs, Dagster's are {len(created)}")
        self.figures["credits"] = {
            "runs_created": len(created),
            "materializations_needing_a_run": len(needed),
            "second_runs": sum(len(ids) - 1 for ids in per_pair.values() if len(ids) > 1),
            # The cap's refusals (each a failed run step), the materializations they left
            # undone, and those refused before their round created any run (they need none).
            "refused": len(self.refusals),
            "refused_materializations": len(refused_pairs - materialized),
            "refused_before_a_run": len(refused_before_a_run),
            "restarts": len(restarts),
            "run_step_retries": retries,
            "reexecutions": sum(len(r.attempts) - 1 for r in self.soak.results),
            "materialized_how": dict(sorted(how.items())),
            "credits_spent": spent,
            "credits_on_completed_runs": loaded,
            "credits_on_runs_cut_short": spent - loaded,  # by a fault, before a restart
        }
        if len(created) != len(needed):
            self.fail(
                f"credits: {len(created)} Extralt runs created for {len(needed)} "
                "materializations that needed one"
            )

    # --- 1b. The credit cap ------------------------------------------------------------------

    def _refusals(self) -> list[dict[str, Any]]:
        """Every step failure of the rounds' Dagster runs that was a credit cap's refusal."""
        from .run_soak import refusal_of

        found = []
        for result in self.soak.results:
            for attempt in result.attempts:
                if attempt.run_id is None:
                    continue
                started: dict[str, float] = {}
                for e in self.logs[attempt.run_id]:
                    event = e.dagster_event
                    if event is None or not e.step_key:
                        continue
                    if event.event_type in (
                        dg.DagsterEventType.STEP_START,
                        dg.DagsterEventType.STEP_RESTARTED,
                    ):
                        started[e.step_key] = e.timestamp
                    action = refusal_of(e)
                    if action is None:
                        continue
                    found.append(
                        {
                            "round": result.round.index,
                            "attempt": attempt,
                            "step": e.step_key,
                            "source": STEP_SOURCE.get(e.step_key, "?"),
                            "action": action,
                            "window": (started.get(e.step_key, e.timestamp), e.timestamp),
                        }
                    )
        return found

    def credit_cap(self) -> None:
        source = capped_source()
        limit = credit_limit()
        cap, worst = int(limit["credits"]), source.budget * 2
        plan = self.soak.plan
        refusals = self.refusals
        for r in refusals:
            if r["source"] != source.name:
                self.fail(f"cap: {r['step']} was refused in round {r['round']}, it has no cap")
        first, last = self.soak.credit_periods
        if first != last:
            self.fail(f"cap: the soak spanned two periods ({first.describe()}, {last.describe()})")
        # No create or restart request for the robot while a refused step ran.
        margin = 0.25 * EMULATOR_SPEED  # emulated seconds either side
        requests = self.emu.requests
        at_refusals = 0
        for r in refusals:
            attempt = r["attempt"]
            lo, hi = (attempt.to_emulated(t) for t in r["window"])
            sent = [
                q
                for q in requests
                if lo - margin <= q.at <= hi + margin and self._spends_for(q, source.robot_id)
            ]
            at_refusals += len(sent)
            if sent:
                self.fail(
                    f"cap: round {r['round']} refused {r['step']} (Dagster run "
                    f"{attempt.run_id[:8]}) but {len(sent)} create/restart requests for "
                    f"{source.robot_id} arrived meanwhile"
                )
        # Not retried: no retry of a refusal, and no restart of a refused step after it.
        retried = 0
        for run_id in self.attempt_ids:
            for e in self._events(run_id, dg.DagsterEventType.STEP_UP_FOR_RETRY):
                retried += "refusing to" in _error_text(e.dagster_event.step_retry_data.error)
        for r in refusals:
            run_id = r["attempt"].run_id
            retried += sum(
                1
                for e in self._events(run_id, dg.DagsterEventType.STEP_RESTARTED)
                if e.step_key == r["step"] and e.timestamp > r["window"][1]
            )
        if retried:
            self.fail(f"cap: {retried} refusals were retried")
        # The spend: each run Dagster created or restarted for the robot was admitted with the
        # final spend of the earlier ones plus its own worst case within the cap (a live run
        # counted at its worst case), and all of them together are within it.
        runs = sorted(
            (
                v
                for v in self.runs.values()
                if v.robot_id == source.robot_id and v.id not in self.scheduled
            ),
            key=lambda v: v.created_at,
        )

        def spend(v: Any) -> int:
            return v.credits_used if v.true_status in TERMINAL_STATUSES else worst

        before = highest = 0
        for v in runs:
            highest = max(highest, before + worst)
            if before + worst > cap:
                self.fail(
                    f"cap: {v.id} was started with {before} credits spent: its worst case "
                    f"({worst}) could pass the cap ({cap})"
                )
            before += spend(v)
        if before > cap:
            self.fail(f"cap: {source.name} spent {before} credits, its cap is {cap}")
        refused_pairs = {r["round"] for r in refusals}
        if len(refused_pairs) < plan.expected_refusals:
            self.fail(
                f"cap: {source.name} was refused in {len(refused_pairs)} rounds; materialized "
                f"in {len(plan.capped_rounds)} with room for {len(plan.capped_rounds) - plan.expected_refusals}, "
                f"{plan.expected_refusals} had to be"
            )
        self.figures["cap"] = {
            "source": CAPPED_SOURCE,
            "credit_limit": cap,
            "per": limit["per"],
            "period": first.describe(),
            "worst_case_per_run": worst,
            "rounds_materializing_it": len(plan.capped_rounds),
            "expected_refusals": plan.expected_refusals,
            "refusals": len(refusals),
            "refused_starts": sum(1 for r in refusals if r["action"] == "start"),
            "refused_restarts": sum(1 for r in refusals if r["action"] == "restart"),
            "refused_rounds": sorted(refused_pairs),
            "runs_admitted": len(runs),
            "credits_spent": before,
            "highest_at_admission": highest,
            "requests_at_refusals": at_refusals,
            "refusals_retried": retried,
        }

    def _spends_for(self, request: Any, robot_id: str) -> bool:
        """A create of a run of `robot_id`, or a restart of one of its runs."""
        if request.method != "POST":
            return False
        if request.path == "/v0/extract/runs":
            body = request.json
            return isinstance(body, dict) and body.get("robot_id") == robot_id
        parts = request.path.split("/")
        if request.path.startswith("/v0/extract/runs/") and parts[-1] == "restart":
            view = self.runs.get(parts[-2])
            return view is None or view.robot_id == robot_id
        return False

    def _round_at(self, emulated: float) -> "RoundResult | None":
        for result in self.soak.results:
            lo, hi = result.window
            if lo <= emulated <= hi:
                return result
        return None

    # --- 1 and 3 for Extralt's scheduled runs ----------------------------------------------

    def scheduled_runs(self) -> None:
        """Extralt's schedule made as many runs as it fired, Dagster none of them; the sensor
        loaded each completed one once (run log origin 'extralt') and observed each failed one
        once; it reported nothing about Dagster's runs and kept to its request budget."""
        party = self.soak.scheduled
        originals = [v for v in self.scheduled.values() if v.restarted_from is None]
        restarted = [v for v in self.scheduled.values() if v.restarted_from is not None]
        by_status = Counter(v.true_status for v in originals)
        completed = {v.id: v for v in originals if v.true_status == "completed"}
        ended = {v.id for v in originals if v.true_status != "completed"}
        for error in party.errors:
            self.fail(f"scheduled: {error}")
        if len(originals) != party.fired:
            self.fail(
                f"scheduled: {len(originals)} scheduled runs, the schedule fired {party.fired}"
            )
        if not completed or not by_status.get("failed"):
            self.fail(
                f"scheduled: the schedule made {dict(by_status)}: no completed or no failed run "
                "to check the sensor with"
            )
        # Dagster created none of them: the sensor's loads ran no run step and sent no create;
        # nothing restarted or stopped a scheduled run.
        run_steps = sum(
            1
            for run_id in self.sensor_run_ids
            for e in self._events(run_id, dg.DagsterEventType.STEP_START)
            if (e.step_key or "").endswith("__run")
        )
        creates = 0
        for run_id in self.sensor_run_ids:
            run = self.instance.get_run_by_id(run_id)
            creates += sum(1 for k in (run.tags if run else {}) if k.endswith(".create_sent_at"))
        by_dagster = run_steps + creates + len(restarted)
        if by_dagster:
            self.fail(
                f"scheduled: Dagster made runs for the schedule's: {run_steps} run steps and "
                f"{creates} creates in the sensor's loads, {len(restarted)} restarts"
            )
        if by_status.get("stopped"):
            self.fail(f"scheduled: {by_status['stopped']} scheduled runs were stopped")
        # The loads: one per completed scheduled run, of nothing else, each succeeded at last.
        launched = Counter(load.run_key for load in party.loads)
        for key, n in sorted(launched.items()):
            if key not in completed:
                self.fail(
                    f"scheduled: the sensor launched a load of {key}, no completed scheduled run"
                )
            if n > 1:
                self.fail(f"scheduled: the sensor's load of {key} was launched {n} times")
        for load in party.loads:
            if not load.success:
                self.fail(
                    f"scheduled: the load of {load.run_key} failed {len(load.attempts)} times"
                )
        requested = Counter(k for t in party.ticks for k in t.run_keys)
        repeated = sum(n - 1 for n in requested.values() if n > 1)
        if repeated:
            self.fail(f"scheduled: the sensor requested a load already launched {repeated} times")
        # What the sensor reported, for every source: events of the scheduled runs only.
        materialized: Counter[str] = Counter()
        observed: Counter[str] = Counter()
        for s in SOURCES:
            key = run_asset_key(s.name)
            for counter, fetch in (
                (materialized, self.instance.fetch_materializations),
                (observed, self.instance.fetch_observations),
            ):
                for record in fetch(key, limit=10_000).records:
                    event = record.asset_materialization or record.asset_observation
                    meta = event.metadata if event else {}
                    if ORIGIN_KEY in meta and meta[ORIGIN_KEY].value == "extralt":
                        counter[str(meta[RUN_ID_KEY].value)] += 1
        foreign = sorted((set(materialized) | set(observed)) - set(self.scheduled))
        if foreign:
            self.fail(f"scheduled: the sensor reported Dagster's runs: {', '.join(foreign)}")
        loaded_once = observed_once = loaded_ended = 0
        if not self.soak.warehouse_exists():
            self.fail("scheduled: no warehouse was written")
            return
        history = _table(SCHEDULED_SOURCE, "captures")
        with self.soak.open_warehouse() as con:
            log = con.execute(f"SELECT run_id, origin FROM {RUN_LOG}").fetchall()
            origins: dict[str, list[str]] = defaultdict(list)
            for run_id, origin in log:
                origins[run_id].append(origin)
            wrong = [i for i, o in origins.items() if i not in self.scheduled and o != ["dagster"]]
            if wrong:
                self.fail(
                    f"scheduled: the run log gives Dagster's runs {', '.join(wrong)} another origin"
                )
            rows = dict(
                con.execute(f"SELECT run_id, count(*) FROM {history} GROUP BY run_id").fetchall()
            )
        for run_id, view in sorted(completed.items()):
            once = (
                origins.get(run_id) == ["extralt"]
                and launched[run_id] == 1
                and materialized[run_id] == 1
                and rows.get(run_id) == view.extracted
            )
            loaded_once += once
            if not once:
                self.fail(
                    f"scheduled: completed run {run_id}: run log {origins.get(run_id)}, "
                    f"{launched[run_id]} loads launched, {materialized[run_id]} materializations "
                    f"reported, {rows.get(run_id)} rows of {view.extracted}"
                )
        for run_id in sorted(ended):
            loaded = bool(origins.get(run_id)) or bool(rows.get(run_id)) or launched[run_id] > 0
            loaded_ended += loaded
            observed_once += observed[run_id] == 1 and not materialized[run_id]
            if loaded or observed[run_id] != 1 or materialized[run_id]:
                self.fail(
                    f"scheduled: {self.runs[run_id].true_status} run {run_id}: loaded {loaded}, "
                    f"observed {observed[run_id]} times, materialized {materialized[run_id]}"
                )
        per_tick = [t.requests for t in party.ticks]
        if max(per_tick, default=0) > SENSOR_PAGES_PER_TICK:
            self.fail(
                f"scheduled: a sensor tick sent {max(per_tick)} requests, its budget is "
                f"{SENSOR_PAGES_PER_TICK}"
            )
        during_rounds = [t for t in party.ticks if t.during.startswith("round")]
        self.figures["scheduled"] = {
            "source": SCHEDULED_SOURCE,
            "every_emulated_seconds": SCHEDULE_EVERY_SECONDS,
            "fired": party.fired,
            "created_by_extralt": len(originals),
            "created_by_dagster": by_dagster,
            "by_status": dict(sorted(by_status.items())),
            "completed": len(completed),
            "failed": by_status.get("failed", 0),
            "loaded_once": loaded_once,
            "loaded_not_completed": loaded_ended,
            "observed_once": observed_once,
            "events_about_dagster_runs": len(foreign),
            "credits": sum(v.credits_used for v in self.scheduled.values()),
            "sensor_ticks": len(party.ticks),
            "sensor_ticks_during_rounds": len(during_rounds),
            "sensor_failed_ticks": sum(1 for t in party.ticks if t.error),
            "sensor_requests": sum(per_tick),
            "sensor_max_requests_per_tick": max(per_tick, default=0),
            "sensor_pages_per_tick": SENSOR_PAGES_PER_TICK,
            "loads_requested": sum(requested.values()),
            "loads_repeated": repeated,
            "loads_dropped_by_daemon": sum(t.dropped for t in party.ticks),
            "loads_launched": len(party.loads),
            "loads_launched_during_rounds": sum(
                1 for x in party.loads if x.during.startswith("round")
            ),
            "load_reexecutions": sum(len(x.attempts) - 1 for x in party.loads),
            "load_step_retries": sum(
                1
                for run_id in self.sensor_run_ids
                for _ in self._events(run_id, dg.DagsterEventType.STEP_UP_FOR_RETRY)
            ),
            "drain_ticks": party.drain_ticks,
            "drain_seconds": round(party.drain_seconds, 1),
        }

    # --- 2. Nothing left crawling -----------------------------------------------------------

    def terminal(self) -> None:
        live = [v for v in self.runs.values() if v.true_status not in TERMINAL_STATUSES]
        for view in live:
            self.fail(f"crawling: Extralt run {view.id} is still {view.true_status}")
        self.figures["terminal"] = {
            "runs": len(self.runs),
            "terminal": len(self.runs) - len(live),
            "by_status": dict(sorted(Counter(v.true_status for v in self.runs.values()).items())),
        }

    # --- 4. Nothing half-done ---------------------------------------------------------------

    def warehouse_whole(self) -> None:
        leftovers = sorted(str(p) for p in self.soak.paths.exports.rglob("*"))
        for path in leftovers:
            self.fail(f"half-done: {path} was left in the export folder")
        lake = self.soak.lake
        # A DuckDB file: every object but DuckDB's own. A lake: every object in it.
        where = "NOT internal" + (f" AND database_name = '{lake.alias}'" if lake else "")
        scanned: dict[str, int] = {}
        try:
            with self.soak.open_warehouse(read_only=False) as con:
                if lake is None:
                    con.execute("CHECKPOINT")
                objects = con.execute(
                    f"SELECT schema_name, table_name FROM duckdb_tables() WHERE {where} "
                    f"UNION ALL SELECT schema_name, view_name FROM duckdb_views() WHERE {where}"
                ).fetchall()
                for schema, name in objects:
                    table = con.sql(f'SELECT * FROM "{schema}"."{name}"').to_arrow_table()
                    scanned[f"{schema}.{name}"] = table.num_rows
            with self.soak.open_warehouse() as con:
                for obj, rows in scanned.items():
                    schema, name = obj.split(".", 1)
                    [(again,)] = con.execute(f'SELECT count(*) FROM "{schema}"."{name}"').fetchall()
                    if again != rows:
                        self.fail(f"half-done: {obj} had {rows} rows, then {again} read-only")
        except (duckdb.Error, WarehouseError) as exc:
            self.fail(f"half-done: the warehouse does not open and scan: {exc}")
        files = (
            [p for p in self.soak.paths.lake.rglob("*") if p.is_file()]
            if lake
            else [self.soak.paths.duckdb] * self.soak.paths.duckdb.exists()
        )
        self.figures["half_done"] = {
            "files_left_in_export_dir": len(leftovers),
            "duckdb_objects_scanned": len(scanned),
            "duckdb_rows_scanned": sum(scanned.values()),
            "duckdb_bytes": sum(p.stat().st_size for p in files),
            "duckdb_files": len(files),
        }

    # --- On a lake: the analyst attached throughout -------------------------------------------

    def analyst_whole_snapshots(self) -> None:
        """Every query of the analyst succeeded and read one whole snapshot: the counts it saw
        are that snapshot's (`AT (VERSION => n)`), and no count ever went down."""
        queries = self.soak.analyst_queries
        failed = [q for q in queries if "error" in q]
        for q in failed[:5]:
            self.fail(f"analyst: a query failed: {q['error']}")
        good = sorted((q for q in queries if "error" not in q), key=lambda q: q["started"])
        wrong = 0
        truth: dict[int, dict[str, int]] = {}
        with self.soak.open_warehouse() as con:
            for q in good:
                snapshot = q["snapshot"]
                if snapshot not in truth:
                    truth[snapshot] = {}
                for name, count in q["counts"].items():
                    if name not in truth[snapshot]:
                        [(n,)] = con.execute(
                            f'SELECT count(*) FROM extralt."{name}" AT (VERSION => ?)',
                            [snapshot],
                        ).fetchall()
                        truth[snapshot][name] = n
                    wrong += truth[snapshot][name] != count
        if wrong:
            self.fail(f"analyst: {wrong} counts were of no snapshot the query read")
        went_down = sum(
            1
            for a, b in itertools.pairwise(good)
            for name, n in a["counts"].items()
            if b["counts"].get(name, n) < n or name not in b["counts"]
        )
        if went_down:
            self.fail(f"analyst: a products count went down (or vanished) {went_down} times")
        if not good:
            self.fail("analyst: no query ran")
        ms = sorted(q["seconds"] * 1000 for q in good)
        self.figures["analyst"] = {
            "queries": len(queries),
            "failed": len(failed),
            "snapshots_seen": len(truth),
            "counts_of_no_snapshot": wrong,
            "median_ms": round(statistics.median(ms), 1) if ms else None,
            "p95_ms": round(ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))], 1) if ms else None,
            "max_ms": round(ms[-1], 1) if ms else None,
        }

    # --- 3. Nothing lost --------------------------------------------------------------------

    def nothing_lost(self) -> None:
        completed = {i: v for i, v in self.runs.items() if v.true_status == "completed"}
        figures = {
            "completed_runs": len(completed),
            "loaded_runs": 0,
            "captures_exported": 0,
            "history_rows": 0,
            "duplicate_rows": 0,
            "missing_rows": 0,
            "products": 0,
            "variants": 0,
            "variant_offers_exported": 0,
        }
        self.figures["lost"] = figures
        if not self.soak.warehouse_exists():
            self.fail("lost: no DuckDB file was written")
            return
        newest: dict[str, dict[str, tuple[float, str, bool]]] = defaultdict(dict)
        with (
            self.soak.open_warehouse() as con,
            ExtraltClient(  # paced under the emulator's limit: no 429s to wait out
                self.soak.api_key,
                self.emu.url,
                rate_limit_per_minute=EMULATOR_RATE_LIMIT[0] * 0.9,
                rate_limit_burst=EMULATOR_RATE_LIMIT[1] // 2,
                max_retries=8,
            ) as client,
            tempfile.TemporaryDirectory(prefix="soak-verify-") as tmp,
        ):
            logged = Counter(
                con.execute(f"SELECT source || '/' || run_id FROM {RUN_LOG}").fetchall()
            )
            for (key,), n in logged.items():
                if n > 1:
                    self.fail(f"lost: the run log has {key} {n} times")
            for source in {ROBOT_SOURCE[v.robot_id] for v in self.runs.values()}:
                history = _table(source, "captures")
                loaded = {
                    r for (r,) in con.execute(f"SELECT DISTINCT run_id FROM {history}").fetchall()
                }
                for run_id in sorted(loaded - set(completed)):
                    self.fail(f"lost: {history} holds rows of {run_id}, which is not completed")
            for _, view in sorted(completed.items()):
                source = ROBOT_SOURCE[view.robot_id]
                self._check_run(con, client, Path(tmp), source, view, figures, newest)
            for source, expected in newest.items():
                self._check_products(con, source, expected, figures)
            figures["variants"] = sum(
                con.execute(f"SELECT count(*) FROM {_table(s, 'variants')}").fetchone()[0]  # type: ignore[index]
                for s in newest
            )

    def _check_run(
        self,
        con: duckdb.DuckDBPyConnection,
        client: ExtraltClient,
        tmp: Path,
        source: str,
        view: Any,
        figures: dict[str, int],
        newest: dict[str, dict[str, tuple[float, str, bool]]],
    ) -> None:
        run_id = view.id
        path = client.download_export(run_id, tmp)
        rows = pq.read_table(path, columns=["id", "product_id", "url", "extracted_at", "variants"])
        path.unlink()
        exported = rows.to_pylist()
        ids = Counter(r["id"] for r in exported)
        history = Counter(
            i
            for (i,) in con.execute(
                f"SELECT id FROM {_table(source, 'captures')} WHERE run_id = ?", [run_id]
            ).fetchall()
        )
        logged = con.execute(
            f"SELECT rows_loaded FROM {RUN_LOG} WHERE source = ? AND run_id = ?",
            [source, run_id],
        ).fetchall()
        figures["captures_exported"] += len(exported)
        figures["history_rows"] += sum(history.values())
        if not logged or (not history and exported):
            self.fail(f"lost: completed Extralt run {run_id} ({source}) was never loaded")
            figures["missing_rows"] += len(exported)
            return
        figures["loaded_runs"] += 1
        duplicates = sum(n - 1 for n in history.values() if n > 1)
        missing = sum((ids - history).values())
        extra = sum((history - ids).values()) - duplicates
        figures["duplicate_rows"] += duplicates
        figures["missing_rows"] += missing
        if duplicates or missing or extra or len(exported) != view.extracted:
            self.fail(
                f"lost: run {run_id} ({source}) exported {len(exported)} captures "
                f"(extracted {view.extracted}); history has {sum(history.values())}: "
                f"{missing} missing, {duplicates} duplicated, {extra} foreign"
            )
        if logged[0][0] != len(exported):
            self.fail(f"lost: the run log says {logged[0][0]} rows for {run_id}, not {len(ids)}")
        offers = sum(
            len(v.get("offers") or []) for r in exported for v in (r["variants"] or []) if v
        )
        figures["variant_offers_exported"] += offers
        [(flat,)] = con.execute(
            f"SELECT count(*) FROM {_table(source, 'variants')} WHERE run_id = ?", [run_id]
        ).fetchall()
        if flat != offers:
            self.fail(f"lost: {source}_variants has {flat} rows of {run_id}, the export {offers}")
        for r in exported:
            key = r["product_id"] or r["url"]
            at = float(r["extracted_at"])
            seen = newest[source].get(key)
            if seen is None or at > seen[0]:
                newest[source][key] = (at, r["id"], False)
            elif at == seen[0]:
                newest[source][key] = (at, seen[1], True)  # a tie: any of them may win

    def _check_products(
        self,
        con: duckdb.DuckDBPyConnection,
        source: str,
        expected: dict[str, tuple[float, str, bool]],
        figures: dict[str, int],
    ) -> None:
        view = dict(
            con.execute(f"SELECT product_key, id FROM {_table(source, 'products')}").fetchall()
        )
        figures["products"] += len(view)
        if set(view) != set(expected):
            self.fail(
                f"lost: {source}_products has {len(view)} products, history "
                f"{len(expected)} distinct product keys"
            )
        wrong = [k for k, (_, i, tie) in expected.items() if not tie and view.get(k) != i]
        if wrong:
            self.fail(f"lost: {source}_products shows a stale capture for {len(wrong)} products")
        self._check_current_offers(con, source)

    def _check_current_offers(self, con: duckdb.DuckDBPyConnection, source: str) -> None:
        """`_current_variants` holds the offers of each product's `_products` capture: its
        rows are among that run's variants of the product, and every product with such
        variants has some."""
        current, variants = _table(source, "current_variants"), _table(source, "variants")
        of_winners = (
            f"SELECT v.* FROM {variants} v SEMI JOIN {_table(source, 'products')} p "
            "ON v.run_id = p.run_id AND v.product_key = p.product_key"
        )
        row = con.execute(
            f"SELECT (SELECT count(*) FROM (SELECT * FROM {current} EXCEPT {of_winners})), "
            f"(SELECT count(DISTINCT product_key) FROM {current}), "
            f"(SELECT count(DISTINCT product_key) FROM ({of_winners}))"
        ).fetchone()
        assert row is not None
        stray, products_current, products_expected = row
        if stray or products_current != products_expected:
            self.fail(
                f"lost: {source}_current_variants has {stray} offers of no latest capture, "
                f"offers for {products_current} products, the variants of the latest captures "
                f"{products_expected}"
            )

    # --- 5. Every failure explained ---------------------------------------------------------

    def failures_explained(self) -> None:
        causes: Counter[str] = Counter()
        failures = retries = 0
        for run_id in self.attempt_ids:
            for e in self.logs[run_id]:
                event = e.dagster_event
                if event is None:
                    continue
                if event.event_type == dg.DagsterEventType.STEP_FAILURE:
                    error = event.step_failure_data.error
                    failures += 1
                elif event.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY:
                    error = event.step_retry_data.error
                    retries += 1
                else:
                    continue
                text = _error_text(error)
                cause = _cause(text)
                source = STEP_SOURCE.get(e.step_key or "", "?")
                names = self._names_run_or_robot(text, source, run_id, e.step_key or "")
                if cause is None or not names:
                    self.fail(
                        f"unexplained: step {e.step_key} of Dagster run {run_id[:8]} failed "
                        f"with {text[:300]!r}"
                    )
                causes[cause or "unexplained"] += 1
        self.figures["explained"] = {
            "step_failures": failures,
            "step_retries": retries,
            "by_cause": dict(causes.most_common()),
        }

    def _names_run_or_robot(self, text: str, source: str, dagster_run: str, step: str) -> bool:
        """The message names one of the source's Extralt runs, or for a step that never had
        one, the robot. A killed or interrupted step's own logs must name the run instead."""
        robot = next((s.robot_id for s in SOURCES if s.name == source), None)

        def names_run(words: str) -> bool:
            return any(
                m in self.runs and self.runs[m].robot_id == robot for m in RUN_ID.findall(words)
            )

        if names_run(text) or (robot is not None and robot in text):
            return True
        if not any(c in text for c in DAGSTER_ERRORS):
            return False
        # Dagster wrote this one (a killed process, an interrupt): the step's logs must say
        # which Extralt run it was following, and what became of it.
        return names_run(
            " ".join(
                e.user_message
                for e in self.logs[dagster_run]
                if e.step_key == step and not e.is_dagster_event
            )
        )

    # --- 5b. The key stays secret -----------------------------------------------------------

    def key_nowhere(self) -> None:
        key = self.soak.api_key.encode()
        scanned = found = 0
        places: list[str] = []
        chunks = [dg.serialize_value(r.tags).encode() for r in self.instance.get_runs()]
        for run_id in self.attempt_ids:
            chunks += [dg.serialize_value(e).encode() for e in self.logs[run_id]]
        blob = b"\n".join(chunks)
        scanned += len(blob)
        if key in blob:
            found += blob.count(key)
            places.append("event log")
        root = self.soak.paths.root
        hits, files, read = secret_occurrences(root, self.soak.api_key)
        scanned += read
        found += sum(hits.values())
        places += [str(Path(p).relative_to(root)) for p in hits]
        if found:
            self.fail(f"secret: the API key appears {found} times, in {', '.join(places)}")
        self.figures["secret"] = {
            "key_occurrences": found,
            "bytes_scanned": scanned,
            "files_scanned": files,
        }

    # --- The faults landed ------------------------------------------------------------------

    def faults_landed(self) -> None:
        landed: Counter[str] = Counter()
        planned: Counter[str] = Counter()
        for result in self.soak.results:
            for fault in result.round.faults:
                planned[fault.kind] += 1
                hits = result.hits.get(fault.kind, 0)
                if hits == -1:  # a run fault the emulator applied: did the victim's run get it?
                    hits = self._victim_hit(result, fault)
                landed[fault.kind] += hits
            for error in result.controller_errors:
                self.fail(f"soak: round {result.round.index}: {error}")
        waited = 0
        for result in self.soak.results:
            if result.lock_window is not None:
                waited += self._steps_overlapping(result, result.lock_window)
        self.figures["faults"] = {
            kind: {"rounds": planned[kind], "hits": landed[kind]}
            for kind in ALL_KINDS
            if planned[kind]
        }
        for kind, counts in self.figures["faults"].items():
            if not counts["hits"]:
                self.fail(f"soak: fault {kind} was planned but never landed")
        self.figures["lock_waits"] = waited
        log = self.soak.paths.daemon_log
        freed = re.findall(r"Freed (\d+) slots for run", log.read_text(errors="replace"))
        self.figures["slots_freed_by_daemon"] = sum(int(n) for n in freed)

    def _victim_hit(self, result: "RoundResult", fault: Any) -> int:
        if fault.category == "shape":
            return len(self._shaped_runs(result, fault))
        lo, hi = result.attempts[0].emulated_window
        want = "failed" if fault.kind == "remote_failure" else "stopped"
        return sum(
            1
            for v in self.runs.values()
            if v.robot_id == fault.victim_robot
            and lo <= v.created_at <= hi
            and v.status == want
            and v.id not in self.scheduled
        )

    def _steps_overlapping(self, result: "RoundResult", window: tuple[float, float]) -> int:
        """Captures steps that ran while another process held the DuckDB file."""
        count = 0
        for attempt in result.attempts:
            if attempt.run_id is None:
                continue
            spans: dict[str, list[float]] = defaultdict(list)
            for e in self.logs[attempt.run_id]:
                if e.step_key and e.step_key.endswith("__captures") and e.dagster_event:
                    spans[e.step_key].append(e.timestamp)
            count += sum(
                1 for times in spans.values() if min(times) < window[1] and max(times) > window[0]
            )
        return count

    # --- 6. Every shape absorbed -------------------------------------------------------------

    def _shaped_runs(self, result: "RoundResult", fault: Fault) -> list[str]:
        """The victim's runs of this round whose loaded rows have the fault's shape."""
        lo, hi = result.window
        run_ids = [
            v.id
            for v in self.runs.values()
            if v.robot_id == fault.victim_robot
            and lo <= v.created_at <= hi
            and v.id not in self.scheduled
        ]
        table = _table(fault.victim, "captures")
        if not run_ids or not self.soak.warehouse_exists():
            return []
        with self.soak.open_warehouse() as con:
            types = dict(_column_types(con, fault.victim))
            if fault.kind == "nested_field":
                if NESTED_FIELD not in types.get("variants", ""):
                    return []
                shaped = (
                    f"list_bool_or(flatten(list_transform(variants, lambda v: list_transform("
                    f"v.offers, lambda o: o.{NESTED_FIELD} IS NOT NULL))))"
                )
                having = f"bool_or({shaped})"
            else:
                having = "count(min_price) = 0 AND count(options) = 0 AND count(*) > 0"
            placeholders = ", ".join("?" for _ in run_ids)
            return [
                r
                for (r,) in con.execute(
                    f"SELECT run_id FROM {table} WHERE run_id IN ({placeholders}) "
                    f"GROUP BY run_id HAVING {having}",
                    run_ids,
                ).fetchall()
            ]

    def shapes_absorbed(self) -> None:
        shapes = [
            (r, f) for r in self.soak.results for f in r.round.faults if f.category == "shape"
        ]
        figures = {"typeless_sources_typed": 0, "nested_fields_reported": 0}
        self.figures["shapes"] = figures
        if not shapes or not self.soak.warehouse_exists():
            return
        reported = self._columns_added_by_source()
        with self.soak.open_warehouse() as con:
            for result, fault in shapes:
                source = fault.victim or ""
                if fault.kind == "typeless_export":
                    wrong = _undocumented_types(con, source)
                    if wrong:
                        self.fail(
                            f"shapes: {source} was served a type-less export (round "
                            f"{result.round.index}); its history now has {', '.join(wrong)}"
                        )
                    else:
                        figures["typeless_sources_typed"] += 1
                    continue
                types = dict(_column_types(con, source))
                if NESTED_FIELD not in types.get("variants", ""):
                    self.fail(
                        f"shapes: {source}'s history has no {NESTED_PATH} after round "
                        f"{result.round.index}"
                    )
                elif NESTED_PATH not in reported.get(source, set()):
                    self.fail(
                        f"shapes: {source}'s history gained {NESTED_PATH}, but no "
                        f"materialization reported it in {COLUMNS_ADDED_KEY}"
                    )
                else:
                    figures["nested_fields_reported"] += 1

    def _columns_added_by_source(self) -> dict[str, set[str]]:
        added: dict[str, set[str]] = defaultdict(set)
        for run_id in self.attempt_ids:
            for e in self._events(run_id, dg.DagsterEventType.ASSET_MATERIALIZATION):
                mat = e.asset_materialization
                if mat is None or COLUMNS_ADDED_KEY not in mat.metadata:
                    continue
                source = mat.asset_key.path[1]
                text = str(mat.metadata[COLUMNS_ADDED_KEY].value)
                added[source].update(p.strip() for p in text.split(",") if p.strip() != "none")
        return added

    # --- The report -------------------------------------------------------------------------

    def report(self) -> str:
        return format_report(self.soak, self.figures, self.violations)


def secret_occurrences(root: Path, secret: str) -> tuple[dict[str, int], int, int]:
    """Where `secret` occurs under `root`: {file: count}, files scanned, bytes scanned.

    Raw bytes, and for SQLite files (Dagster's storage) every cell too, zlib-decompressed
    where it is compressed: Dagster stores run snapshots compressed, where a raw scan is blind.
    """
    needle = secret.encode()
    hits: dict[str, int] = {}
    files = scanned = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        files += 1
        scanned += len(data)
        count = data.count(needle)
        if data.startswith(b"SQLite format 3\x00"):
            count += _sqlite_occurrences(path, needle)
        if count:
            hits[str(path)] = count
    return hits, files, scanned


def _sqlite_occurrences(path: Path, needle: bytes) -> int:
    count = 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in con.execute(f'SELECT * FROM "{table}"'):
                for cell in row:
                    if isinstance(cell, str):
                        cell = cell.encode()
                    if not isinstance(cell, bytes):
                        continue
                    with contextlib.suppress(zlib.error):
                        cell = zlib.decompress(cell)
                    count += cell.count(needle)
    return count


#: The path in drift reports of the field the `nested_field` shape adds to every offer.
NESTED_PATH = f"variants[].offers[].{NESTED_FIELD}"


def _table(source: str, kind: str) -> str:
    """`schema.table` of one of a source's tables (captures, products, variants), as the
    warehouse names it."""
    return Target(source).table_names[kind]


def _column_types(con: duckdb.DuckDBPyConnection, source: str) -> list[tuple[str, str]]:
    target = Target(source)
    return con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = ? "
        "AND table_name = ? ORDER BY column_index",
        [target.schema, target.table("captures")],
    ).fetchall()


def _undocumented_types(con: duckdb.DuckDBPyConnection, source: str) -> list[str]:
    """ "column TYPE" for each documented column whose history type is not the documented one,
    among those that hold a value (a column never given one has nothing to type)."""
    wrong = []
    for column, type_ in _column_types(con, source):
        if column not in TYPELESS_COLUMNS or _documented(column, type_):
            continue
        [(values,)] = con.execute(
            f'SELECT count("{column}") FROM {Target(source).captures}'
        ).fetchall()
        if values:
            wrong.append(f"{column} {type_}")
    return wrong


def _documented(column: str, type_: str) -> bool:
    """`type_` is the column's documented type, or a widening a JSON lines export makes (JSON
    has one integer type); a nested column is a struct, whatever fields it gained."""
    documented = DOCUMENTED_TYPES[column]
    if documented.startswith("STRUCT("):
        return type_.startswith("STRUCT(")
    return type_ == documented or (documented == "INTEGER" and type_ == "BIGINT")


def _error_text(error: Any) -> str:
    parts = []
    while error is not None:
        parts.append(f"{error.cls_name}: {error.message}")
        error = error.cause or error.context
    return " <- ".join(parts)


def _cause(text: str) -> str | None:
    return next((c for c, frags in CAUSES.items() if any(f in text for f in frags)), None)


def format_report(soak: "Soak", figures: dict[str, Any], violations: list[str]) -> str:
    plan = soak.plan
    f = figures
    cap = f["cap"]
    c, t, lost, half, ex, sec = (
        f["credits"],
        f["terminal"],
        f["lost"],
        f["half_done"],
        f["explained"],
        f["secret"],
    )
    attempts = sum(len(r.attempts) for r in soak.results)
    lines = [
        f"Extralt soak, seed {plan.seed}, size {plan.size}: {len(plan.rounds)} rounds, "
        f"{plan.materializations} source materializations of {len(SOURCES)} sources, "
        f"{attempts} Dagster runs ({c['reexecutions']} re-executions from failure), "
        f"{f['seconds']:.0f}s",
        "Faults injected (kind: rounds/hits): "
        + ", ".join(f"{k}: {v['rounds']}/{v['hits']}" for k, v in f["faults"].items())
        + f"; captures steps that ran while the {'lake was read' if soak.lake else 'DuckDB file was held'}: {f['lock_waits']}; "
        f"pool slots that ended runs still held, freed by the daemon: "
        f"{f['slots_freed_by_daemon']}",
        f"(1) Credits: {c['runs_created']} Extralt runs created == {c['materializations_needing_a_run']}"
        f" materializations that needed one ({c['refused_before_a_run']} refused by the cap "
        f"needed none); second runs: {c['second_runs']}; "
        f"{c['run_step_retries']} run-step retries and {c['reexecutions']} re-executions "
        f"resumed, restarted or adopted instead ({c['restarts']} restarts); materialized as "
        + ", ".join(f"{k} {v}" for k, v in c["materialized_how"].items())
        + f"; {c['credits_spent']:,} credits spent: {c['credits_on_completed_runs']:,} on the "
        f"completed runs, {c['credits_on_runs_cut_short']:,} on runs a fault cut short",
        f"(1b) Credit cap on {cap['source']}: {cap['credit_limit']:,} credits per {cap['per']} "
        f"({cap['period']}), {cap['worst_case_per_run']} a run at worst; {cap['refusals']} "
        f"refusals ({cap['refused_starts']} starts, {cap['refused_restarts']} restarts) in rounds "
        f"{cap['refused_rounds']} (>= {cap['expected_refusals']} planned), "
        f"{c['refused_materializations']} materializations left undone, "
        f"{c['refused_before_a_run']} of them needing no run; {cap['requests_at_refusals']} "
        f"create/restart requests during them, {cap['refusals_retried']} retried; spent "
        f"{cap['credits_spent']:,} over {cap['runs_admitted']} runs (at most "
        f"{cap['highest_at_admission']:,} at an admission) <= {cap['credit_limit']:,}",
        f"(2) Nothing crawling: {t['terminal']}/{t['runs']} Extralt runs terminal ("
        + ", ".join(f"{k} {v}" for k, v in t["by_status"].items())
        + ")",
        f"(3) Nothing lost: {lost['loaded_runs']}/{lost['completed_runs']} completed runs loaded; "
        f"history {lost['history_rows']:,} rows == {lost['captures_exported']:,} exported "
        f"captures ({lost['missing_rows']} missing, {lost['duplicate_rows']} duplicated); "
        f"products {lost['products']:,} == distinct product keys; variants "
        f"{lost['variants']:,} == {lost['variant_offers_exported']:,} exported offers",
        f"(4) Nothing half-done: {half['files_left_in_export_dir']} files left in the export "
        f"folder; "
        + (
            f"DuckLake ({half['duckdb_bytes']:,} bytes in {half['duckdb_files']} files) scanned: "
            if soak.lake
            else f"DuckDB file ({half['duckdb_bytes']:,} bytes) checkpointed and scanned: "
        )
        + f"{half['duckdb_objects_scanned']} tables and views, {half['duckdb_rows_scanned']:,} rows",
        f"(5) Failures explained: {ex['step_failures']} step failures and {ex['step_retries']} "
        "step retries, each naming the Extralt run (or robot) and the cause ("
        + ", ".join(f"{k}: {v}" for k, v in ex["by_cause"].items())
        + f"); API key found {sec['key_occurrences']} times in {sec['bytes_scanned']:,} bytes "
        f"({sec['files_scanned']} files plus the event log)",
        f"(6) Shapes absorbed: {f['shapes']['typeless_sources_typed']} sources served a "
        "type-less export have the documented types; "
        f"{f['shapes']['nested_fields_reported']} new nested fields reported by path",
    ]
    sc = f.get("scheduled")
    if sc:
        lines.append(
            f"Extralt-scheduled runs of {sc['source']} (every {sc['every_emulated_seconds']:.0f} "
            f"emulated s): (1) {sc['created_by_extralt']} created by Extralt == {sc['fired']} the "
            f"schedule fired, {sc['created_by_dagster']} by Dagster ("
            + ", ".join(f"{k} {v}" for k, v in sc["by_status"].items())
            + f"; {sc['credits']:,} credits); (3) {sc['loaded_once']}/{sc['completed']} completed "
            f"loaded exactly once by the sensor (origin 'extralt'), {sc['loaded_not_completed']} "
            f"others loaded, {sc['observed_once']}/{sc['failed']} failed observed once; events "
            f"about Dagster's runs: {sc['events_about_dagster_runs']}; sensor: {sc['sensor_ticks']} "
            f"ticks ({sc['sensor_ticks_during_rounds']} during rounds, {sc['drain_ticks']} after, "
            f"{sc['drain_seconds']}s), {sc['sensor_requests']} list requests, at most "
            f"{sc['sensor_max_requests_per_tick']}/{sc['sensor_pages_per_tick']} a tick; "
            f"{sc['loads_launched']} loads launched ({sc['loads_launched_during_rounds']} during "
            f"rounds, {sc['loads_dropped_by_daemon']} dropped as launched, "
            f"{sc['loads_repeated']} repeated), {sc['load_step_retries']} step retries and "
            f"{sc['load_reexecutions']} re-executions from failure"
        )
    if "analyst" in f:
        a = f["analyst"]
        lines.append(
            f"(7) Analyst attached throughout: {a['queries']} queries of every _products, "
            f"{a['failed']} failed; {a['snapshots_seen']} snapshots seen, "
            f"{a['counts_of_no_snapshot']} counts of no snapshot; latency median "
            f"{a['median_ms']} ms, p95 {a['p95_ms']} ms, max {a['max_ms']} ms"
        )
    if violations:
        lines.append(f"VIOLATIONS ({len(violations)}):")
        lines += [f"  - {v}" for v in violations]
    else:
        lines.append("All invariants held.")
    return "\n".join(lines)
