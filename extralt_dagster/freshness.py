"""The freshness policy of a source's captures asset, derived from its schedule.

A source on a cron is fresh while its last load is younger than the cron's longest interval
(the gap between two ticks, the longest over a year of ticks, in the schedule's time zone) plus
a margin for the crawl (the run asset's poll timeout: the longest a run may take). It warns at
half the margin. `freshness:` in the YAML overrides it: a duration (`"26 hours"`) is the fail
window, `off` gives no policy.

Dagster has no public cron iterator, so the cron's ticks are computed here: the 5 standard
fields (`*`, lists, ranges, steps, month and day names) and the `@hourly`, `@daily`,
`@weekly`, `@monthly`, `@yearly` aliases, with cron's rule that a restricted day-of-month and
day-of-week match either.
"""

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from .warehouse.maintenance import parse_duration

#: The run asset's default poll timeout (`ExtraltResource.poll_timeout_seconds`): the crawl's
#: margin when the source sets none.
DEFAULT_CRAWL_MARGIN = timedelta(hours=6)
FRESHNESS_AUTO = "auto"
FRESHNESS_OFF = "off"

_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
#: (lowest, highest, names) of each field; names count from the lowest.
_FIELDS = ((0, 59, []), (0, 23, []), (1, 31, []), (1, 12, _MONTHS), (0, 7, _DAYS))
#: How far ahead ticks are read: a year and a bit, so a yearly cron has two.
_HORIZON_DAYS = 400
_ENOUGH_TICKS = 50_000


def _field(text: str, low: int, high: int, names: list[str]) -> set[int]:
    values: set[int] = set()
    for part in text.lower().split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if body == "*":
            first, last = low, high
        else:
            ends = [names.index(e) + low if e in names else int(e) for e in body.split("-")]
            first, last = ends[0], ends[-1]
            if step_text and len(ends) == 1:
                last = high
        values.update(range(first, last + 1, step))
    return values


def cron_ticks(cron: str, timezone: str, start: datetime, days: int) -> list[datetime]:
    """The cron's ticks from `start` for `days` days, as aware datetimes in `timezone`."""
    fields = _ALIASES.get(cron.strip().lower(), cron).split()
    minutes, hours, mdays, months, wdays = (
        _field(f, low, high, names) for f, (low, high, names) in zip(fields, _FIELDS, strict=True)
    )
    wdays = {d % 7 for d in wdays}  # 7 is Sunday too
    any_mday, any_wday = fields[2] == "*", fields[4] == "*"
    zone = ZoneInfo(timezone)
    first = start.astimezone(zone).date()
    ticks = []
    for offset in range(days):
        if len(ticks) > _ENOUGH_TICKS:
            break  # a dense cron: its longest gap is long since among these
        day = first + timedelta(days=offset)
        if day.month not in months:
            continue
        mday_ok, wday_ok = day.day in mdays, (day.isoweekday() % 7) in wdays
        # Both restricted: either matches (cron's rule); else the restricted one decides.
        matches = mday_ok and wday_ok if any_mday or any_wday else mday_ok or wday_ok
        if not matches:
            continue
        for hour in sorted(hours):
            for minute in sorted(minutes):
                ticks.append(datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone))
    return ticks


def longest_interval(cron: str, timezone: str, start: datetime) -> timedelta:
    """The longest gap between two ticks of the cron over the year from `start`."""
    ticks = cron_ticks(cron, timezone, start, _HORIZON_DAYS)
    # In UTC: two aware datetimes of one zone subtract as wall clocks, blind to DST.
    instants = [t.astimezone(UTC) for t in ticks]
    gaps = [b - a for a, b in itertools.pairwise(instants)]
    return max(gaps, default=timedelta(days=_HORIZON_DAYS))


def freshness_policy(
    cron: str | None,
    timezone: str,
    setting: str | None,
    *,
    crawl_margin: timedelta = DEFAULT_CRAWL_MARGIN,
    start: datetime | None = None,
) -> dg.FreshnessPolicy | None:
    """The captures asset's policy: from `setting` (a duration, or `off`), else derived from
    the cron; None without a cron or with `off`."""
    if setting == FRESHNESS_OFF:
        return None
    if setting not in (None, FRESHNESS_AUTO):
        return dg.FreshnessPolicy.time_window(fail_window=parse_duration(setting, "freshness"))
    if not cron:
        return None
    longest = longest_interval(cron, timezone, start or datetime.now(ZoneInfo(timezone)))
    return dg.FreshnessPolicy.time_window(
        fail_window=longest + crawl_margin, warn_window=longest + crawl_margin / 2
    )


__all__ = [
    "FRESHNESS_AUTO",
    "FRESHNESS_OFF",
    "cron_ticks",
    "freshness_policy",
    "longest_interval",
]
