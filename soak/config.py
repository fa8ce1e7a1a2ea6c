"""What the soak runs: its sources and the settings its resources use. No Dagster here."""

from dataclasses import dataclass

JOB_NAME = "soak"
#: Emulated seconds per real second: a 40-capture run (2 s starting, 2 s crawling) takes 0.2 s.
EMULATOR_SPEED = 20.0
#: Above the soak's own pace, so the only 429s are the injected ones (and rare bursts).
EMULATOR_RATE_LIMIT = (600, 60)
#: Short enough that the read-timeout fault (a slower answer) trips it, long enough that a busy
#: 2-core box answers every normal request in time.
REQUEST_TIMEOUT_SECONDS = 2.0
#: The step retry (RetryPolicy) that a killed or failed step gets.
RETRY_MAX = 2
RETRY_DELAY_SECONDS = 0.5
LOCK_TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class Source:
    name: str
    robot_id: str
    host: str
    budget: int


#: One robot per source, so a run fault can target one source (`Faults.run_fault_robots`).
SOURCES = (
    Source("shoes", "rbt_shoes", "shoes.example", 40),
    Source("outdoor", "rbt_outdoor", "outdoor.example", 30),
    Source("books", "rbt_books", "books.example", 50),
    Source("toys", "rbt_toys", "toys.example", 25),
    Source("garden", "rbt_garden", "garden.example", 35),
    Source("kitchen", "rbt_kitchen", "kitchen.example", 20),
)


def run_op(name: str) -> str:
    """The op (and step key) of a source's `run` asset."""
    return f"extralt__{name}__run"


def captures_op(name: str) -> str:
    return f"extralt__{name}__captures"


# --- The Extralt-scheduled runs party -----------------------------------------------------------

#: Extralt's own schedule ("Recurring extractions") runs this source's robot during the soak. Books
#: is one Dagster materializes in most rounds too, so the sensor must tell Dagster's runs of the
#: robot (completed, failed, stopped, restarted) from Extralt's.
SCHEDULED_SOURCE = "books"
#: Emulated seconds: one scheduled run every 30 s of the soak (speed 20), the first after 1 s.
SCHEDULE_EVERY_SECONDS = 600.0
SCHEDULE_FIRST_IN_SECONDS = 20.0
#: Not books' own budget (50): the scheduled runs are set up on the dashboard, apart from Dagster,
#: so an ambiguous create of books never finds a scheduled run to adopt (its budget differs).
SCHEDULE_BUDGET = 12
#: Which scheduled runs fail remotely (counted from 1): observed, never loaded.
SCHEDULE_FAILING = (2, 4)
SCHEDULE_FAIL_MESSAGE = "Robot crashed: the scheduled crawl hit the site's maintenance page"
#: The sensor watches every source: each tick reads at most this many pages of the run list.
SENSOR_NAME = "soak_extralt_runs"
SENSOR_PAGES_PER_TICK = 3
#: No other client asks for pages of this size, so the sensor's requests are counted apart.
SENSOR_PAGE_SIZE = 10
#: Real seconds between two ticks, as the daemon spaces them (30 s of emulated time or more).
SENSOR_INTERVAL_SECONDS = 3.0
#: After the last round: how long the sensor may take to handle every scheduled run.
SENSOR_DRAIN_TIMEOUT_SECONDS = 180.0


# --- The credit cap party -------------------------------------------------------------------

#: This source has a `credit_limit` that fits `CAPPED_RUNS` of its runs at their worst case
#: (budget x 2 credits) in a month. Kitchen: never a books-like scheduled source (the sensor's
#: reports would count in its spend) and, with the default seed, never a run fault's victim, so
#: each of its admitted runs completes at exactly its worst case; the small plan materializes it
#: 6 times, so its 5th and 6th rounds are refused (`plan.expected_refusals`).
CAPPED_SOURCE = "kitchen"
CAPPED_RUNS = 4
CREDIT_PER = "month"
#: Candidate time zones of the cap's calendar month: the soak takes the one whose month is
#: furthest from its start or end (over 12 h, UTC-12 and UTC+14 being 26 h apart), so a soak of
#: minutes never spans two periods, whatever the day it runs.
CREDIT_TIMEZONES = ("UTC", "Etc/GMT+12", "Etc/GMT-14")


def capped_source() -> Source:
    return next(s for s in SOURCES if s.name == CAPPED_SOURCE)


def credit_limit() -> dict[str, int | str]:
    return {"credits": CAPPED_RUNS * capped_source().budget * 2, "per": CREDIT_PER}
