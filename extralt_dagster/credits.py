"""Credits a source spent in a calendar period, read from the Dagster instance, and the cap.

Where "spent" comes from: the instance, so checking costs no API request. Each Extralt run is
counted once, by its id:

- a run the source's `run` asset materialized or observed in the period (a Dagster run's, or
  one the external-runs sensor reported) counts its `extralt/credits_spent`;
- a run a Dagster run created in the period followed (the `extralt/<name>.run_ids` tags) with
  no such event yet (still crawling, timed out, terminated, failed) counts at its worst case,
  `budget` x 2: its spend is not known, and it may still be spending;
- an in-flight Dagster run that sent a create and has no run yet counts at its worst case too.

Runs started outside Dagster count once the sensor reports them (`observe_external_runs`);
without it they are not seen.
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from .api.models import CREDITS_PER_CAPTURE
from .naming import (
    IN_FLIGHT_STATUSES,
    RUN_ID_KEY,
    create_sent_tag,
    metadata_key,
    run_asset_key,
    run_id_tag,
    run_ids_tag,
)
from .spec import CreditLimit

#: The clock periods are read by; a test sets the time of day here.
wall_clock = time.time

_CREDITS_KEY = metadata_key("credits_spent")


@dataclass(frozen=True)
class Period:
    """One calendar day, week (from Monday) or month in a time zone."""

    per: str
    timezone: str
    start: datetime
    end: datetime

    @classmethod
    def containing(cls, per: str, timezone: str, now: float) -> "Period":
        zone = ZoneInfo(timezone)
        today = datetime.fromtimestamp(now, zone).date()
        if per == "day":
            first, last = today, today + timedelta(days=1)
        elif per == "week":
            first = today - timedelta(days=today.weekday())
            last = first + timedelta(days=7)
        else:
            first = today.replace(day=1)
            last = (first + timedelta(days=32)).replace(day=1)
        start = datetime(first.year, first.month, first.day, tzinfo=zone)
        end = datetime(last.year, last.month, last.day, tzinfo=zone)
        return cls(per, timezone, start, end)

    def describe(self) -> str:
        """'month from 2026-12-01 (UTC)'."""
        return f"{self.per} from {self.start:%Y-%m-%d} ({self.timezone})"


@dataclass(frozen=True)
class Spend:
    """What a source spent in a period: `credits` over `runs` runs, of which `worst_case` were
    counted at `budget` x 2 because their spend is not known yet."""

    credits: int
    runs: int
    worst_case: int


def spent_in_period(
    instance: dg.DagsterInstance,
    name: str,
    period: Period,
    *,
    worst_case_credits: int,
    known: dict[str, int] | None = None,
    current_dagster_run: str | None = None,
) -> Spend:
    """The source's credits in `period` (see the module docstring); `known` gives runs whose
    spend the caller has just read (the run being finished)."""
    after = period.start.timestamp()
    credits: dict[str, int] = dict(known or {})
    key = run_asset_key(name)
    for fetch in (instance.fetch_materializations, instance.fetch_observations):
        cursor = None
        while True:
            result = fetch(
                dg.AssetRecordsFilter(asset_key=key, after_timestamp=after),
                limit=1000,
                cursor=cursor,
            )
            for record in result.records:
                event = record.asset_materialization or record.asset_observation
                if event is None or RUN_ID_KEY not in event.metadata:
                    continue
                run_id = str(event.metadata[RUN_ID_KEY].value)
                value = event.metadata.get(_CREDITS_KEY)
                if run_id not in credits and value is not None:
                    credits[run_id] = int(value.value)
            if not result.has_more:
                break
            cursor = result.cursor
    worst = 0
    created_after = datetime.fromtimestamp(after, UTC)
    for run in instance.get_runs(filters=dg.RunsFilter(created_after=created_after)):
        tags = run.tags
        followed = [i for i in tags.get(run_ids_tag(name), "").split(",") if i]
        for run_id in followed:
            if run_id not in credits:
                credits[run_id] = worst_case_credits
                worst += 1
        unanswered = create_sent_tag(name) in tags and run_id_tag(name) not in tags
        if unanswered and run.run_id != current_dagster_run and run.status in IN_FLIGHT_STATUSES:
            credits[f"create of {run.run_id}"] = worst_case_credits
            worst += 1
    return Spend(credits=sum(credits.values()), runs=len(credits), worst_case=worst)


@dataclass(frozen=True)
class LocationCap:
    """`location_credit_limit`: one cap shared by every source of a code location (a sources
    file or Component), counted in `timezone`; `budgets` gives each source's worst case."""

    limit: CreditLimit
    timezone: str
    budgets: dict[str, int]

    def spent(
        self,
        instance: dg.DagsterInstance,
        period: Period,
        current_dagster_run: str | None,
        known: dict[str, dict[str, int]] | None = None,
    ) -> Spend:
        """What all the sources spent in `period`, each counted as `spent_in_period` does;
        `known` gives, by source, runs whose spend the caller has just read."""
        parts = [
            spent_in_period(
                instance,
                name,
                period,
                worst_case_credits=worst_case(budget),
                known=(known or {}).get(name),
                current_dagster_run=current_dagster_run,
            )
            for name, budget in self.budgets.items()
        ]
        return Spend(
            credits=sum(p.credits for p in parts),
            runs=sum(p.runs for p in parts),
            worst_case=sum(p.worst_case for p in parts),
        )


def worst_case(budget: int) -> int:
    return budget * CREDITS_PER_CAPTURE


def refusal(
    name: str,
    limit: CreditLimit,
    period: Period,
    spend: Spend,
    budget: int,
    action: str,
    robot_id: str,
    run_id: str | None = None,
    *,
    shared_by: int | None = None,
) -> str | None:
    """Why a run of `budget` captures must not be `action`ed (created, restarted), or None.
    The message names the robot, and the run a restart would have restarted; `shared_by`
    (the number of sources) words it for the location's cap."""
    could_cost = worst_case(budget)
    if spend.credits + could_cost <= limit.credits:
        return None
    field = "credit_limit" if shared_by is None else "location_credit_limit"
    whose = (
        f"its {field} is"
        if shared_by is None
        else f"the {field} that its code location's {shared_by} sources share is"
    )
    spent_by = "" if shared_by is None else " by those sources"
    unknown = (
        f", {spend.worst_case} of them counted at their worst case (still running, or their "
        "spend unknown)"
        if spend.worst_case
        else ""
    )
    return (
        f"Source {name!r}: refusing to {action} an Extralt run of robot {robot_id}"
        + (f" ({run_id})" if run_id else "")
        + f": {whose} "
        f"{limit.credits:,} credits per {limit.per} ({period.describe()}), {spend.credits:,} "
        f"are already spent{spent_by} in this {limit.per} over {spend.runs} run(s){unknown}, and "
        f"this run could cost {could_cost:,} more (budget {budget:,} x {CREDITS_PER_CAPTURE} "
        f"credits). Raise {field}.credits, lower the budget (the source's, or `budget` in the run "
        f"config), or wait for the next {limit.per}, from {period.end:%Y-%m-%d %H:%M} "
        f"({period.timezone}). No Extralt request was made."
    )


__all__ = [
    "LocationCap",
    "Period",
    "Spend",
    "refusal",
    "spent_in_period",
    "wall_clock",
    "worst_case",
]
