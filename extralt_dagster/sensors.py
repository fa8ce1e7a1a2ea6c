"""`build_extralt_sensor`: notice Extralt runs started outside Dagster and load each one once.

Extralt's own schedules ("Recurring extractions") and people on its dashboard start runs too.
Each tick of the sensor reads the run list (`GET /v0/extract/runs`, following `nextCursor`) and,
for every terminal run of a watched robot that no Dagster run followed:

- `completed`: reports a materialization of `extralt/<name>/run` (the metadata a Dagster-made
  run gets, with `extralt/origin: extralt`) and requests a load of exactly that run by the
  source's captures asset;
- `failed` or `stopped`: reports an observation of `extralt/<name>/run` with the status and
  the reason, and loads nothing.

Cost: at most `pages_per_tick` requests a tick, each sent once (a page that fails ends the
tick, and the next tick asks for it again), and never a create, stop or restart: no credits.

Exactly once, whatever order the list comes in (the docs give none):

- the cursor (JSON) keeps where this sweep of the list stopped and which runs it has handled;
  a sweep ends at the list's last page, and the next one starts again at the first, so a run
  that appears anywhere in the list is met within one sweep;
- a load is requested with `run_key` = the Extralt run id and the tag `extralt/observed_run_id`,
  and no run that tag already names is requested again: a lost or reset cursor, or a second
  sensor, loads nothing twice;
- a run already in the run asset's event log (materialized or observed) is not reported again;
- a run that an in-flight Dagster materialization may still adopt (its create was ambiguous)
  waits until that materialization ends, and so does every run of a source while a Dagster
  run that has its own run of it is in flight (its captures step loads the run asset's newest
  materialization: the sensor's must not come first).

No `from __future__ import annotations` here: Dagster reads the sensor function's annotations.
"""

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from .api.client import CREATE_CLOCK_SKEW_SECONDS, ExtraltClient
from .api.errors import ExtraltAPIError, ExtraltAuthError, ExtraltError, ExtraltValidationError
from .api.models import ExtraltRun, RunStatus
from .assets.metadata import RunMaterialization
from .naming import (
    EXTERNAL_RUNS_SENSOR,
    IN_FLIGHT_STATUSES,
    METADATA_PREFIX,
    OBSERVED_RUN_TAG,
    RUN_ID_KEY,
    SOURCE_TAG,
    captures_asset_key,
    captures_op_name,
    create_sent_tag,
    run_asset_key,
    run_id_tag,
)
from .resource import ExtraltResource
from .spec import (
    DEFAULT_OBSERVE_INTERVAL_SECONDS,
    DEFAULT_OBSERVE_PAGES_PER_TICK,
    SourceSpec,
    check_fields,
)

logger = logging.getLogger("extralt_dagster.sensors")

#: The Dagster daemon gives a sensor tick 60 s by default; a tick stops asking for pages after
#: this many, so it ends (and keeps its place) well inside that.
DEFAULT_TICK_SECONDS = 40.0
#: The most runs one page of the list is asked for (the API may send fewer).
DEFAULT_PAGE_SIZE = 100
#: Answers to a page cursor the API no longer honours: the sweep starts again at the top.
_STALE_CURSOR_STATUSES = frozenset({400, 404, 410, 422})
_CURSOR_VERSION = 1


@dataclass(frozen=True)
class WatchedSource:
    """A source whose robot the sensor watches: its name (asset keys) and its robot."""

    name: str
    robot_id: str


@dataclass
class SweepCursor:
    """The sensor's durable state, kept as JSON in the sensor cursor.

    `page` is the `nextCursor` this sweep stopped at (None: the next tick starts at the first
    page); `sweep` counts sweeps; `handled` maps each terminal run of a watched robot already
    dealt with to the last sweep that listed it. At a sweep's end the runs it did not list are
    forgotten, so the cursor stays as small as the list.
    """

    page: str | None = None
    sweep: int = 1
    handled: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> tuple["SweepCursor", str | None]:
        """The cursor, and why it was started afresh (None: it read fine, or there was none)."""
        if not text:
            return cls(), None
        try:
            data = json.loads(text)
            if data.get("v") != _CURSOR_VERSION:
                raise ValueError(f"version {data.get('v')!r}")
            page, sweep, handled = data["page"], data["sweep"], data["handled"]
            if page is not None and not isinstance(page, str):
                raise ValueError("page is not a string")
            if not isinstance(sweep, int) or not isinstance(handled, dict):
                raise ValueError("sweep or handled has the wrong type")
            return cls(
                page=page, sweep=sweep, handled={str(k): int(v) for k, v in handled.items()}
            ), None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return cls(), f"the sensor cursor is unreadable ({exc}); starting a new sweep"

    def dump(self) -> str:
        return json.dumps(
            {"v": _CURSOR_VERSION, "page": self.page, "sweep": self.sweep, "handled": self.handled},
            sort_keys=True,
            separators=(",", ":"),
        )

    def end_sweep(self) -> None:
        self.handled = {run: seen for run, seen in self.handled.items() if seen >= self.sweep}
        self.sweep += 1
        self.page = None


def build_extralt_sensor(
    sources: Sequence[Sequence[dg.AssetsDefinition] | dg.AssetsDefinition | SourceSpec | str],
    *,
    name: str = EXTERNAL_RUNS_SENSOR,
    minimum_interval_seconds: int = DEFAULT_OBSERVE_INTERVAL_SECONDS,
    pages_per_tick: int = DEFAULT_OBSERVE_PAGES_PER_TICK,
    page_size: int = DEFAULT_PAGE_SIZE,
    tick_seconds: float = DEFAULT_TICK_SECONDS,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    description: str | None = None,
) -> dg.SensorDefinition:
    """A sensor that loads the runs Extralt started by itself for these sources' robots.

    `sources`: what `build_extralt_assets` returned, one list per source (the run asset names
    its robot), or `SourceSpec`s. Two sources with one robot are refused: a run of that robot
    could go to either. The sensor needs the `extralt` resource, and starts running: turning
    it on spends no credits. Each tick sends at most `pages_per_tick` requests.
    """
    watched = _watched(sources)
    check_fields(
        {
            "observe_interval_seconds": minimum_interval_seconds,
            "observe_pages_per_tick": pages_per_tick,
        }
    )
    if page_size < 1 or not tick_seconds > 0:
        raise ExtraltValidationError(
            f"page_size must be 1 or more and tick_seconds above 0, got {page_size!r} and "
            f"{tick_seconds!r}."
        )
    settings = _TickSettings(pages_per_tick, page_size, tick_seconds)
    names = ", ".join(w.name for w in watched.values())

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        target=[captures_asset_key(w.name) for w in watched.values()],
        description=description
        or (
            f"Loads the Extralt runs started outside Dagster (Extralt schedules, its dashboard) "
            f"for {names}: each completed run once, with no credits spent. A tick reads at most "
            f"{pages_per_tick} page(s) of the run list."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext, extralt: ExtraltResource) -> dg.SensorResult:
        return _Tick(context, extralt, watched, settings).run()

    return _sensor


@dataclass(frozen=True)
class _TickSettings:
    pages_per_tick: int
    page_size: int
    tick_seconds: float


def _watched(sources: Iterable[Any]) -> dict[str, WatchedSource]:
    """robot id -> the source watching it; every problem named before Dagster sees a sensor."""
    by_robot: dict[str, WatchedSource] = {}
    for item in sources:
        source = _watched_source(item)
        other = by_robot.get(source.robot_id)
        if other is not None and other.name != source.name:
            raise dg.DagsterInvalidDefinitionError(
                f"build_extralt_sensor: sources {other.name!r} and {source.name!r} both run robot "
                f"{source.robot_id}, so a run that robot started outside Dagster could belong to "
                "either. Watch the robot from one source only (observe_external_runs on one)."
            )
        by_robot[source.robot_id] = source
    if not by_robot:
        raise dg.DagsterInvalidDefinitionError(
            "build_extralt_sensor needs at least one source: pass what build_extralt_assets "
            "returned for each source to watch."
        )
    return by_robot


def _watched_source(item: Any) -> WatchedSource:
    if isinstance(item, SourceSpec):
        return WatchedSource(item.name, item.robot_id)
    assets = [item] if isinstance(item, dg.AssetsDefinition) else list(item)
    for assets_def in assets:
        if not isinstance(assets_def, dg.AssetsDefinition):
            break
        for key in assets_def.keys:
            parts = key.path
            if len(parts) == 3 and parts[2] == "run" and key == run_asset_key(parts[1]):
                robot = assets_def.metadata_by_key[key].get(f"{METADATA_PREFIX}robot_id")
                if isinstance(robot, str) and robot:
                    return WatchedSource(parts[1], robot)
    raise dg.DagsterInvalidDefinitionError(
        f"build_extralt_sensor: {item!r:.120} is not a source: pass the list "
        "build_extralt_assets returned (it holds the source's run asset), or a SourceSpec."
    )


class _Tick:
    """One evaluation: read pages of the run list, decide about each run, keep the place."""

    def __init__(
        self,
        context: dg.SensorEvaluationContext,
        extralt: ExtraltResource,
        watched: Mapping[str, WatchedSource],
        settings: _TickSettings,
    ) -> None:
        self.context = context
        self.instance = context.instance
        self.extralt = extralt
        self.watched = watched
        self.settings = settings
        self.cursor, problem = SweepCursor.parse(context.cursor)
        if problem:
            context.log.warning(problem)
        self.requests = 0
        self.listed = 0
        self.deferred = 0
        self.unreadable = 0
        self.found: list[tuple[WatchedSource, ExtraltRun]] = []
        self._followed: set[str] | None = None
        self._adopting: list[tuple[str | None, float]] | None = None

    def run(self) -> dg.SensorResult:
        sweep = self.cursor.sweep
        with self.extralt.make_client() as client:
            stopped_by = self._read_pages(client)
            events, run_requests = self._decide(client)
        summary = (
            f"{self.requests} request(s), {self.listed} run(s) listed (sweep {sweep}"
            f"{', ended' if self.cursor.sweep > sweep else ''}); {len(run_requests)} load(s) requested, {len(events)} "
            f"event(s) reported, {self.deferred} run(s) deferred"
        )
        if stopped_by:
            summary += f"; stopped early: {stopped_by}"
        self.context.log.info(summary)
        return dg.SensorResult(
            run_requests=run_requests,
            asset_events=events,
            cursor=self.cursor.dump(),
            skip_reason=None if run_requests else f"No run started outside Dagster: {summary}",
        )

    # --- reading the list ----------------------------------------------------------------

    def _read_pages(self, client: ExtraltClient) -> str | None:
        """Pages until the budget, the time or the list ends; why it stopped early, if it did."""
        ends = time.monotonic() + self.settings.tick_seconds
        while self.requests < self.settings.pages_per_tick:
            left = ends - time.monotonic()
            if left <= 0:
                return f"the tick's {self.settings.tick_seconds:g} s are spent"
            page_cursor = self.cursor.page
            self.requests += 1
            try:
                page = client.runs_page(
                    page_cursor, page_size=self.settings.page_size, retry=False, deadline=left
                )
            except ExtraltAuthError:
                raise  # a wrong key fails the tick, visibly; the cursor is unchanged
            except ExtraltAPIError as exc:
                if page_cursor is not None and exc.status_code in _STALE_CURSOR_STATUSES:
                    self.context.log.warning(
                        f"Extralt no longer honours the run list's page cursor ({exc}); "
                        "this sweep starts again at the first page."
                    )
                    self.cursor.page = None
                    continue
                return self._stopped(exc)
            except ExtraltError as exc:
                return self._stopped(exc)
            for problem in page.unreadable:
                self.unreadable += 1
                self.context.log.warning(f"Skipped a row of the run list: {problem}")
            self.listed += len(page.runs)
            for run in page.runs:
                self._meet(run)
            self.cursor.page = page.next_cursor
            if page.next_cursor is None:
                self.cursor.end_sweep()
                return None
        return None

    def _stopped(self, exc: ExtraltError) -> str:
        self.context.log.warning(
            f"Reading the Extralt run list failed ({exc}); the next tick asks for the same page."
        )
        return str(exc)

    def _meet(self, run: ExtraltRun) -> None:
        source = self.watched.get(run.robot_id or "")
        if source is None:
            return
        if run.id in self.cursor.handled:
            self.cursor.handled[run.id] = self.cursor.sweep
            return
        if not run.status.is_terminal:
            return  # met again once it ends
        if run.id in self._followed_by_dagster():
            self.cursor.handled[run.id] = self.cursor.sweep
            return
        if self._may_be_adopted(source, run):
            self.deferred += 1
            return
        self.found.append((source, run))
        self.cursor.handled[run.id] = self.cursor.sweep

    def _followed_by_dagster(self) -> set[str]:
        """Every Extralt run a Dagster run followed, for any source (`extralt/<name>.run_ids`).

        Read after the unanswered creates: a run a Dagster run records in between is then in
        this set, and one it records later was still an unanswered create, so it waits."""
        if self._adopting is None:
            self._adopting = list(self._unanswered_creates())
        if self._followed is None:
            keys = [
                k
                for k in self.instance.get_run_tag_keys()
                if k.startswith(METADATA_PREFIX) and k.endswith(".run_ids")
            ]
            tags = self.instance.get_run_tags(tag_keys=keys) if keys else []
            self._followed = {i for _, values in tags for v in values for i in v.split(",") if i}
        return self._followed

    def _may_be_adopted(self, source: WatchedSource, run: ExtraltRun) -> bool:
        """Whether an in-flight Dagster run whose create went unanswered may still take this run
        for its own: one of the same source (or of a source this sensor does not know), with a
        create sent no later than the clock skew after the run was created."""
        assert self._adopting is not None  # read with the followed runs, before them
        if run.created_at is None:
            return bool(self._adopting)
        created = run.created_at.timestamp()
        known = {w.name for w in self.watched.values()}
        return any(
            (name == source.name or name not in known)
            and created >= sent_at - CREATE_CLOCK_SKEW_SECONDS
            for name, sent_at in self._adopting
        )

    def _unanswered_creates(self) -> Iterable[tuple[str | None, float]]:
        """(source, sent at) of each in-flight Dagster run with a create and no Extralt run yet,
        its own tags or those of its parent runs (a re-execution adopts too); (source, -inf)
        of each that has its run of a watched source, so every run of that source waits."""
        for dagster_run in self.instance.get_runs(
            filters=dg.RunsFilter(statuses=IN_FLIGHT_STATUSES)
        ):
            tags = dict(dagster_run.tags)
            parent_id = dagster_run.parent_run_id
            for _ in range(20):
                if parent_id is None:
                    break
                parent = self.instance.get_run_by_id(parent_id)
                if parent is None:
                    break
                tags = {**parent.tags, **tags}
                parent_id = parent.parent_run_id
            for key, value in tags.items():
                if not (key.startswith(METADATA_PREFIX) and key.endswith(".create_sent_at")):
                    continue
                name = key[len(METADATA_PREFIX) : -len(".create_sent_at")]
                if key != create_sent_tag(name):
                    continue
                if run_id_tag(name) in tags:
                    # Its run step has its run, but its captures step may be still to come and
                    # loads the run asset's newest materialization: reporting one of this
                    # source now would make it load that run instead of its own. Wait.
                    if name in {w.name for w in self.watched.values()}:
                        yield name, float("-inf")
                    continue
                try:
                    yield name, float(value)
                except ValueError:
                    yield None, 0.0  # unreadable: assume it may adopt anything

    # --- deciding ------------------------------------------------------------------------

    def _decide(
        self, client: ExtraltClient
    ) -> tuple[list[dg.AssetMaterialization | dg.AssetObservation], list[dg.RunRequest]]:
        if not self.found:
            return [], []
        requested = {
            v
            for _, values in self.instance.get_run_tags(tag_keys=[OBSERVED_RUN_TAG])
            for v in values
        }
        events: list[dg.AssetMaterialization | dg.AssetObservation] = []
        run_requests: list[dg.RunRequest] = []
        reported: dict[str, set[str]] = {}
        # Oldest first, so the run asset's newest materialization is the newest run.
        for source, run in sorted(
            self.found, key=lambda f: (f[1].created_at is None, f[1].created_at or 0)
        ):
            if source.name not in reported:
                reported[source.name] = self._reported(source.name)
            if run.id not in reported[source.name]:
                events.append(_event(source, run, client.dashboard_url(run.id)))
            if run.status is RunStatus.COMPLETED and run.id not in requested:
                run_requests.append(_load_request(source, run))
        return events, run_requests

    def _reported(self, name: str) -> set[str]:
        """The Extralt runs the source's run asset has a materialization or observation of."""
        key = run_asset_key(name)
        found: set[str] = set()
        for fetch in (self.instance.fetch_materializations, self.instance.fetch_observations):
            cursor = None
            while True:
                result = fetch(key, limit=1000, cursor=cursor)
                for record in result.records:
                    event = record.asset_materialization or record.asset_observation
                    value = None if event is None else event.metadata.get(RUN_ID_KEY)
                    if value is not None:
                        found.add(str(value.value))
                if not result.has_more:
                    break
                cursor = result.cursor
        return found


def _event(
    source: WatchedSource, run: ExtraltRun, dashboard_url: str
) -> dg.AssetMaterialization | dg.AssetObservation:
    metadata = RunMaterialization(
        run=run,
        how="observed",
        dashboard_url=dashboard_url,
        polls=0,
        robot_id=run.robot_id or source.robot_id,
        budget=run.budget,
        origin="extralt",
    ).to_metadata()
    key = run_asset_key(source.name)
    if run.status is RunStatus.COMPLETED:
        return dg.AssetMaterialization(
            asset_key=key,
            description=f"Extralt run {run.id}, started outside Dagster, completed.",
            metadata=metadata,
        )
    reason = run.error_message or run.raw.get("stopReason") or "no reason given"
    return dg.AssetObservation(
        asset_key=key,
        description=f"Extralt run {run.id}, started outside Dagster, {run.status.value}: {reason}. "
        "Nothing was loaded.",
        metadata={**metadata, f"{METADATA_PREFIX}reason": str(reason)},
    )


def _load_request(source: WatchedSource, run: ExtraltRun) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run.id,
        asset_selection=[captures_asset_key(source.name)],
        run_config={"ops": {captures_op_name(source.name): {"config": {"run_id": run.id}}}},
        tags={SOURCE_TAG: source.name, OBSERVED_RUN_TAG: run.id},
    )


__all__ = ["SweepCursor", "WatchedSource", "build_extralt_sensor"]
