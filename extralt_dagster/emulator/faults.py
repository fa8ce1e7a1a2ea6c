"""Faults on demand: the failures a real API and network produce, switched on by tests."""

import dataclasses
import fnmatch
import random
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Faults:
    """What goes wrong, and for which requests. All off by default.

    Request faults (`error_*`, `latency_seconds`) hit API requests whose "METHOD /path" matches
    `match` (fnmatch; e.g. "GET /v0/extract/runs/*"). Export faults hit every export. Run faults
    (`fail_runs`, `never_finish`) mark runs created or restarted while they are set.
    """

    match: str = "*"
    error_status: int = 503
    error_count: int = 0  # the next N matching requests fail
    error_rate: float = 0.0  # then this seeded random fraction of them fails
    retry_after: float | None = None  # seconds for the Retry-After header; None sends none
    error_after_handling: bool = False  # do the work (e.g. create the run), then answer the error
    latency_seconds: float = 0.0

    export_cut_after_bytes: int | None = None  # send this many bytes, then drop the connection
    export_corrupt: bool = False  # garble the middle and the footer
    export_truncate: bool = False  # cleanly end the body early
    export_truncate_fraction: float = 0.5
    export_extra_columns: bool = False  # add undocumented columns (rating, review_count)
    export_drop_columns: tuple[str, ...] = ()
    content_disposition_filename: str | None = None  # None: "<run_id>.<ext>"; "": no header

    fail_runs: bool = False  # new runs fail partway, with an errorMessage
    fail_message: str = "Robot crashed: the target site kept answering 503"
    never_finish: bool = False  # new runs stall while running, forever

    def __post_init__(self) -> None:
        self.export_drop_columns = tuple(self.export_drop_columns)
        if not 100 <= int(self.error_status) <= 599:
            raise ValueError(f"error_status must be an HTTP status, got {self.error_status!r}")
        if not 0.0 <= float(self.error_rate) <= 1.0:
            raise ValueError("error_rate must be between 0 and 1")
        if self.error_count < 0 or self.latency_seconds < 0:
            raise ValueError("error_count and latency_seconds must be >= 0")
        if not 0.0 <= self.export_truncate_fraction < 1.0:
            raise ValueError("export_truncate_fraction must be in [0, 1)")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Faults":
        """From admin JSON; unknown keys are a TypeError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise TypeError(f"unknown fault fields: {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["export_drop_columns"] = list(self.export_drop_columns)
        return out


@dataclass
class RequestFault:
    """What the gate does to one request."""

    latency: float = 0.0
    status: int | None = None
    retry_after: float | None = None
    after_handling: bool = False


@dataclass
class FaultInjector:
    """Holds the live `Faults` and decides, thread-safely, which request gets which fault."""

    faults: Faults = field(default_factory=Faults)
    seed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def replace(self, faults: Faults) -> None:
        with self._lock:
            self.faults = faults
            self._rng = random.Random(self.seed)

    def for_request(self, method: str, path: str) -> RequestFault:
        with self._lock:
            f = self.faults
            if not fnmatch.fnmatchcase(f"{method} {path}", f.match):
                return RequestFault()
            fault = RequestFault(latency=f.latency_seconds)
            failing = False
            if f.error_count > 0:
                f.error_count -= 1
                failing = True
            elif f.error_rate > 0 and self._rng.random() < f.error_rate:
                failing = True
            if failing:
                fault.status = f.error_status
                fault.retry_after = f.retry_after
                fault.after_handling = f.error_after_handling
            return fault
