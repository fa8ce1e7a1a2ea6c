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

    Request faults (`error_*`, `latency_seconds`, `endless_body`, `wrong_body`) hit API requests
    whose "METHOD /path" matches `match` (fnmatch; e.g. "GET /v0/extract/runs/*"). Export faults
    hit every export, or the next `export_count`. Run faults (`fail_runs`, `never_finish`) mark
    runs created or restarted while they are set, of every robot or only of `run_fault_robots`.
    """

    match: str = "*"
    error_status: int = 503
    error_count: int = 0  # the next N matching requests fail
    error_rate: float = 0.0  # then this seeded random fraction of them fails
    retry_after: float | None = None  # seconds for the Retry-After header; None sends none
    error_after_handling: bool = False  # do the work (e.g. create the run), then answer the error
    latency_seconds: float = 0.0
    latency_count: int | None = None  # delay only the next N matching requests; None: all
    # A hostile server: answer 200 with a body that never ends, one `endless_chunk_bytes` chunk
    # every `endless_interval_seconds` (None: the first chunk, then silence).
    endless_body: bool = False
    endless_interval_seconds: float | None = 0.05
    endless_chunk_bytes: int = 1
    # Answer with this raw body (JSON of the wrong shape, or not JSON).
    wrong_body: str | None = None
    wrong_body_status: int = 200

    export_cut_after_bytes: int | None = None  # send this many bytes, then drop the connection
    export_corrupt: bool = False  # garble the middle and the footer
    export_truncate: bool = False  # cleanly end the body early
    export_truncate_fraction: float = 0.5
    export_extra_columns: bool = False  # add undocumented columns (rating, review_count)
    export_drop_columns: tuple[str, ...] = ()
    content_disposition_filename: str | None = None  # None: "<run_id>.<ext>"; "": no header
    export_count: int | None = None  # the export faults above hit only the next N exports

    fail_runs: bool = False  # new runs fail partway, with an errorMessage
    fail_message: str = "Robot crashed: the target site kept answering 503"
    never_finish: bool = False  # new runs stall while running, forever
    run_fault_robots: tuple[str, ...] = ()  # run faults hit only these robots' runs; (): all

    def __post_init__(self) -> None:
        self.export_drop_columns = tuple(self.export_drop_columns)
        self.run_fault_robots = tuple(self.run_fault_robots)
        if not 100 <= int(self.error_status) <= 599:
            raise ValueError(f"error_status must be an HTTP status, got {self.error_status!r}")
        if not 0.0 <= float(self.error_rate) <= 1.0:
            raise ValueError("error_rate must be between 0 and 1")
        if self.error_count < 0 or self.latency_seconds < 0:
            raise ValueError("error_count and latency_seconds must be >= 0")
        if not 0.0 <= self.export_truncate_fraction < 1.0:
            raise ValueError("export_truncate_fraction must be in [0, 1)")
        for name in ("latency_count", "export_count"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be >= 0 or None")
        if self.endless_chunk_bytes < 1:
            raise ValueError("endless_chunk_bytes must be >= 1")
        if not 100 <= int(self.wrong_body_status) <= 599:
            raise ValueError(
                f"wrong_body_status must be an HTTP status, got {self.wrong_body_status!r}"
            )

    def run_marks(self, robot_id: str | None) -> dict[str, Any]:
        """What the run faults do to a run of `robot_id` created or restarted now: the
        `fail` and `stall` arguments of the state machine."""
        hit = not self.run_fault_robots or robot_id in self.run_fault_robots
        return {
            "fail": self.fail_message if self.fail_runs and hit else None,
            "stall": self.never_finish and hit,
        }

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
        out["run_fault_robots"] = list(self.run_fault_robots)
        return out


@dataclass
class RequestFault:
    """What the gate does to one request."""

    latency: float = 0.0
    status: int | None = None
    retry_after: float | None = None
    after_handling: bool = False
    endless: bool = False
    wrong_body: str | None = None


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
            fault = RequestFault(endless=f.endless_body, wrong_body=f.wrong_body)
            if f.latency_seconds and f.latency_count != 0:
                fault.latency = f.latency_seconds
                if f.latency_count is not None:
                    f.latency_count -= 1
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

    def for_export(self) -> Faults:
        """The faults one export body gets: a snapshot, with `export_count` used up by one."""
        with self._lock:
            f = self.faults
            snapshot = Faults.from_dict(f.to_dict())
            if f.export_count is not None:
                if f.export_count == 0:
                    return Faults()
                f.export_count -= 1
            return snapshot
