"""The soak's fourth party: Extralt's own schedule, and the sensor that loads what it starts.

The emulator schedules runs of one source's robot (`SCHEDULED_SOURCE`, which Dagster also
materializes in most rounds), some of them failing. `build_extralt_sensor`, watching every source,
is ticked during the whole soak as the Dagster daemon ticks it: its asset events are stored with
`report_runless_asset_event`, a request whose run key this sensor already used is dropped, and
the others are launched. A load runs as a real Dagster run on a worker of its own
(`soak.worker`: the multiprocess executor, the step retry policy), beside the round's run, so the
round's faults land on it too; a load that still fails is re-executed from failure, as a person
would, and counted. After the last round the schedule is removed and the sensor is ticked until
it has handled every scheduled run: each completed one loaded, each failed one observed.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dagster as dg

from extralt_dagster import ExtraltResource, build_extralt_assets, build_extralt_sensor
from extralt_dagster.api.models import TERMINAL_STATUSES
from extralt_dagster.naming import RUN_ID_KEY, run_asset_key

from .config import (
    REQUEST_TIMEOUT_SECONDS,
    SCHEDULE_BUDGET,
    SCHEDULE_EVERY_SECONDS,
    SCHEDULE_FAIL_MESSAGE,
    SCHEDULE_FAILING,
    SCHEDULE_FIRST_IN_SECONDS,
    SCHEDULED_SOURCE,
    SENSOR_DRAIN_TIMEOUT_SECONDS,
    SENSOR_INTERVAL_SECONDS,
    SENSOR_NAME,
    SENSOR_PAGE_SIZE,
    SENSOR_PAGES_PER_TICK,
    SOURCES,
)

if TYPE_CHECKING:
    from extralt_dagster.emulator import Emulator

#: The tags the daemon puts on a run a sensor requested.
RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"
#: On every Dagster run of this party (a load, or its re-execution).
PARTY_TAG = "soak/party"
PARTY = "sensor"
LIST = ("GET", "/v0/extract/runs")
SCHEDULED_ROBOT = next(s.robot_id for s in SOURCES if s.name == SCHEDULED_SOURCE)
MAX_REEXECUTIONS = 3
ATTEMPT_TIMEOUT_SECONDS = 300.0


@dataclass
class SensorTick:
    requests: int  # GET /v0/extract/runs requests the tick sent
    run_keys: list[str]  # the loads it requested
    events: int  # asset events it reported
    dropped: int = 0  # requests whose run key this sensor already used
    during: str = ""  # the round in progress ("drain" after the last)
    error: str | None = None


@dataclass
class Load:
    """One load the sensor requested: its Dagster runs, the first and any re-executions."""

    run_key: str
    during: str
    attempts: list[dict[str, Any]] = field(default_factory=list)  # the worker's answers

    @property
    def success(self) -> bool:
        return bool(self.attempts) and bool(self.attempts[-1].get("success"))

    @property
    def run_ids(self) -> list[str]:
        return [a["run_id"] for a in self.attempts if a.get("run_id")]


class ScheduledRuns:
    """The schedule in the emulator, the sensor ticked in a thread, its loads on `worker`."""

    def __init__(
        self,
        emu: "Emulator",
        instance: dg.DagsterInstance,
        api_key: str,
        worker: Any,  # a soak.run_soak.Worker
        log: Callable[[str], None],
    ) -> None:
        self.emu = emu
        self.instance = instance
        self.worker = worker
        self.log = log
        self.sensor = build_extralt_sensor(
            [build_extralt_assets(s.name, s.robot_id, budget=s.budget) for s in SOURCES],
            name=SENSOR_NAME,
            pages_per_tick=SENSOR_PAGES_PER_TICK,
            page_size=SENSOR_PAGE_SIZE,
        )
        self.extralt = ExtraltResource(
            api_key=api_key,
            base_url=emu.url,
            request_timeout_seconds=REQUEST_TIMEOUT_SECONDS,
            max_retries=0,  # each page is sent once anyway (retry=False)
        )
        self.cursor: str | None = None
        self.ticks: list[SensorTick] = []
        self.loads: list[Load] = []
        self.errors: list[str] = []
        self.fired = 0
        self.drain_ticks = 0
        self.drain_seconds = 0.0
        self.during = "before the first round"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the soak's calls ----------------------------------------------------------------

    def start(self) -> None:
        self.emu.set_schedule(
            SCHEDULED_ROBOT,
            every_seconds=SCHEDULE_EVERY_SECONDS,
            first_in=SCHEDULE_FIRST_IN_SECONDS,
            budget=SCHEDULE_BUDGET,
            failing=list(SCHEDULE_FAILING),
            fail_message=SCHEDULE_FAIL_MESSAGE,
        )
        self._thread = threading.Thread(target=self._loop, name="soak-sensor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the ticks (once the load in flight, if any, is over)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(ATTEMPT_TIMEOUT_SECONDS * (MAX_REEXECUTIONS + 1))

    def finish(self) -> None:
        """After the last round: no more scheduled runs; tick until every one is handled."""
        self.stop()
        self.emu.clear_schedule(SCHEDULED_ROBOT)
        self.fired = self.emu.run_counts()["created"]["schedule"]
        self.during = "drain"
        started = time.monotonic()
        deadline = started + SENSOR_DRAIN_TIMEOUT_SECONDS
        pause = threading.Event()  # never set: the ticks' spacing
        while (left := self.unhandled()) and time.monotonic() < deadline:
            self._tick()
            self.drain_ticks += 1
            pause.wait(SENSOR_INTERVAL_SECONDS / 4)
        self.drain_seconds = time.monotonic() - started
        if left:
            self.errors.append(
                f"the sensor had not handled {len(left)} scheduled runs "
                f"{SENSOR_DRAIN_TIMEOUT_SECONDS:.0f}s after the last round: {', '.join(left)}"
            )
        self.log(
            f"  sensor: {len(self.ticks)} ticks, {len(self.loads)} loads launched "
            f"({sum(len(x.attempts) - 1 for x in self.loads)} re-executions) for {self.fired} "
            f"scheduled runs of {SCHEDULED_SOURCE}; drained in {self.drain_ticks} ticks "
            f"({self.drain_seconds:.1f}s)"
        )

    def scheduled_views(self) -> list[Any]:
        return [v for v in self.emu.runs.values() if v.origin == "schedule"]

    def observed_ids(self) -> list[str]:
        """The run ids of every observation of the scheduled source's run asset (repeats kept)."""
        ids = []
        for record in self.instance.fetch_observations(
            run_asset_key(SCHEDULED_SOURCE), limit=10_000
        ).records:
            event = record.asset_observation
            value = None if event is None else event.metadata.get(RUN_ID_KEY)
            if value is not None:
                ids.append(str(value.value))
        return ids

    def unhandled(self) -> list[str]:
        """Scheduled runs not yet terminal, or completed and not loaded, or ended otherwise and
        not observed."""
        loaded = {x.run_key for x in self.loads if x.success}
        observed = set(self.observed_ids())

        def handled(view: Any) -> bool:
            if view.true_status not in TERMINAL_STATUSES:
                return False
            return view.id in (loaded if view.true_status == "completed" else observed)

        return [v.id for v in self.scheduled_views() if not handled(v)]

    # --- the daemon's part ---------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._tick()
            self._stop.wait(SENSOR_INTERVAL_SECONDS)

    def _tick(self) -> None:
        during = self.during
        before = self._list_requests()
        try:
            with dg.build_sensor_context(
                instance=self.instance,
                cursor=self.cursor,
                resources={"extralt": self.extralt},
                sensor_name=SENSOR_NAME,
            ) as context:
                result = self.sensor(context)
        except Exception as exc:  # the daemon records a failed tick; the cursor stays
            self.ticks.append(
                SensorTick(self._list_requests() - before, [], 0, during=during, error=repr(exc))
            )
            self.errors.append(f"a sensor tick failed ({during}): {type(exc).__name__}: {exc}")
            return
        assert isinstance(result, dg.SensorResult)
        tick = SensorTick(
            self._list_requests() - before,
            [r.run_key or "" for r in result.run_requests or []],
            len(result.asset_events or []),
            during=during,
        )
        self.ticks.append(tick)
        for event in result.asset_events or []:
            self.instance.report_runless_asset_event(event)
        launches = []
        for request in result.run_requests or []:
            used = self.instance.get_runs(
                filters=dg.RunsFilter(
                    tags={RUN_KEY_TAG: request.run_key or "", SENSOR_NAME_TAG: SENSOR_NAME}
                ),
                limit=1,
            )
            if used:
                tick.dropped += 1
            else:
                launches.append(request)
        self.cursor = result.cursor
        for request in launches:
            self._launch(request, during)

    def _list_requests(self) -> int:
        """The sensor's list requests so far: no other client asks for pages of its size."""
        limit = str(SENSOR_PAGE_SIZE)
        return sum(
            1
            for r in self.emu.requests
            if r.method == LIST[0] and r.path == LIST[1] and r.query.get("limit") == limit
        )

    def _launch(self, request: dg.RunRequest, during: str) -> None:
        """Execute the load as the daemon's run launcher would; re-execute it from failure, as a
        person would, while the soak's faults made it fail."""
        tags = {
            **request.tags,
            RUN_KEY_TAG: request.run_key or "",
            SENSOR_NAME_TAG: SENSOR_NAME,
            PARTY_TAG: PARTY,
        }
        load = Load(request.run_key or "", during)
        self.loads.append(load)
        spec: dict[str, Any] = {
            "tags": tags,
            "assets": [k.to_user_string() for k in request.asset_selection or []],
            "run_config": request.run_config,
        }
        while True:
            try:
                answer = self.worker.execute(spec, ATTEMPT_TIMEOUT_SECONDS)
            except Exception as exc:  # the soak's own trouble: reported, never swallowed
                self.errors.append(f"the sensor's load of {load.run_key}: {exc}")
                return
            load.attempts.append(answer)
            if answer.get("success") or len(load.attempts) > MAX_REEXECUTIONS:
                break
            if not answer.get("run_id"):
                self.errors.append(f"the sensor's load of {load.run_key}: {answer.get('error')}")
                break
            spec = {
                "tags": {k: v for k, v in tags.items() if k != RUN_KEY_TAG},
                "parent_run_id": answer["run_id"],
                "run_config": request.run_config,
            }
