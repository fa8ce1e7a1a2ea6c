"""Part 2: what waiting for an Extralt run costs in API requests, and how late it notices the end.

The emulator's clock is frozen (``speed=0``) and ``ExtraltRunHandler.wait`` is given the
emulator's clock and a ``sleep`` that advances it, so a 5-minute run is simulated exactly, in
milliseconds, over real HTTP: every request is counted by the emulator. Requests take no
emulated time here; against the real API each adds its latency to the interval.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass
from typing import Any

from extralt_dagster.api.client import ExtraltClient
from extralt_dagster.api.run_handler import ExtraltRunHandler, PollSettings
from extralt_dagster.emulator import Emulator

#: The documented budget: about 120 requests per minute per organization.
BUDGET_PER_MINUTE = 120
START_TIME = 1_767_225_600.0
STARTING_SECONDS = 2.0
CAPTURE_RATE = 20.0

SCHEDULES: dict[str, PollSettings] = {
    "adaptive": PollSettings(),  # the defaults: 1 s, x1.5 per poll, up to 10 s
    "fixed_10s": PollSettings(initial_interval_seconds=10.0, interval_seconds=10.0),
}
SCHEDULE_LABELS = {
    "adaptive": "default poll (1 s, x1.5, up to 10 s)",
    "fixed_10s": "fixed 10 s poll",
}


@dataclass
class RunCost:
    run_seconds: float
    create: int
    polls: int
    export: int
    requests: int
    latency_seconds: float
    busiest_minute: int


def _one_run(
    emu: Emulator, client: ExtraltClient, seconds: float, settings: PollSettings, export: bool
) -> RunCost:
    budget = round((seconds - STARTING_SECONDS) * CAPTURE_RATE)
    emu.clear_requests()
    run_id = client.create_run("rbt_shoes", budget=budget)
    handler = ExtraltRunHandler(client, run_id, clock=emu.clock.now, sleep=emu.clock.advance)
    final = handler.wait(settings)
    noticed = emu.clock.now()
    if export:
        with tempfile.TemporaryDirectory(prefix="extralt-poll-") as tmp:
            client.download_export(run_id, tmp, "parquet")
    view = emu.run(run_id)
    if final.status.value != "completed" or view.ended_at is None:
        raise RuntimeError(f"run {run_id} ended {final.status.value}")
    requests = emu.requests
    times = sorted(r.at for r in requests)
    busiest = max(sum(1 for t in times if start <= t < start + 60) for start in times)
    return RunCost(
        run_seconds=view.ended_at - view.created_at,
        create=sum(1 for r in requests if r.method == "POST"),
        polls=handler.polls,
        export=sum(1 for r in requests if r.path.endswith("/captures/export")),
        requests=len(requests),
        latency_seconds=noticed - view.ended_at,
        busiest_minute=busiest,
    )


def measure(
    durations: dict[str, float], *, repeat: int = 3, sweep_points: int = 20
) -> dict[str, Any]:
    """Per schedule and run length: requests per Extralt run (create + polls + the export
    download), and the seconds from the run's end to the poll that saw it, at the exact
    length (``repeat`` times; deterministic) and over ``sweep_points`` lengths spread across one
    10 s poll interval after it (where a run ends within the interval is luck)."""
    out: dict[str, Any] = {"budget_per_minute": BUDGET_PER_MINUTE, "schedules": {}}
    with (
        Emulator(speed=0, rate_limit=None, start_time=START_TIME) as emu,
        ExtraltClient(emu.api_key, emu.url, rate_limit_per_minute=None) as client,
    ):
        for name, settings in SCHEDULES.items():
            per: dict[str, Any] = {}
            for label, seconds in durations.items():
                exact = [_one_run(emu, client, seconds, settings, True) for _ in range(repeat)]
                sweep = [
                    _one_run(emu, client, seconds + 10.0 * i / sweep_points, settings, False)
                    for i in range(sweep_points)
                ]
                requests = [c.requests for c in exact]
                first = exact[0]
                steady = 60.0 / settings.interval_seconds
                per[label] = {
                    "run_seconds": first.run_seconds,
                    "requests": _stats(requests),
                    "breakdown": {"create": first.create, "polls": first.polls, "export": 1},
                    "latency_seconds": _stats([c.latency_seconds for c in exact]),
                    "sweep_latency_seconds": _stats([c.latency_seconds for c in sweep]),
                    "sweep_requests": _stats([c.requests + 1 for c in sweep]),
                    "busiest_minute_requests": first.busiest_minute,
                    "requests_per_minute_average": first.requests / (first.run_seconds / 60.0),
                    "steady_requests_per_minute": steady,
                    "concurrent_runs_within_budget": BUDGET_PER_MINUTE / steady,
                }
            out["schedules"][name] = {"label": SCHEDULE_LABELS[name], "runs": per}
    return out


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
        "n": len(values),
    }
