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
