"""Faults on demand: the failures a real API and network produce, switched on by tests."""

import dataclasses
import fnmatch
import random
import threading
from dataclasses import dataclass, field
from typing import Any

from .datagen import ExportShape


@dataclass
class Faults:
    """What goes wrong, and for which requests. All off by default.

    Request faults (`error_*`, `latency_seconds`, `endless_body`, `wrong_body`) hit API requests
    whose "METHOD /path" matches `match` (fnmatch; e.g. "GET /v0/extract/runs/*"). Export faults
    hit every export, or the next `export_count`. Shape faults (`export_short_by`,
    `export_nested_field`, `export_typeless`, `export_no_columns`) serve a whole, valid file of
    another shape: they hit the exports of `export_shape_robots` (every robot when empty), or
    only the next `export_shape_count` of them. Run faults (`fail_runs`, `never_finish`) mark runs created or
    restarted while they are set, of every robot or only of `run_fault_robots`.
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
    export_corrupt_page: bool = False  # garble only the middle: a whole file, one bad page
    export_truncate: bool = False  # cleanly end the body early
    export_truncate_fraction: float = 0.5
    export_extra_columns: bool = False  # add undocumented columns (rating, review_count)
    export_drop_columns: tuple[str, ...] = ()
    content_disposition_filename: str | None = None  # None: "<run_id>.<ext>"; "": no header
    export_count: int | None = None  # the export faults above hit only the next N exports

    export_short_by: int = 0  # leave out the run's last N captures: a short, valid file
    export_nested_field: bool = False  # every offer gains `warranty`, a field the docs omit
    export_typeless: bool = False  # datagen.TYPELESS_COLUMNS are untyped NULLs in every row
    export_no_columns: bool = False  # an export of no captures is a file with no columns
    export_shape_robots: tuple[str, ...] = ()  # shape faults hit only these robots' exports
    export_shape_count: int | None = None  # ... and only the next N of them; None: all

    fail_runs: bool = False  # new runs fail partway, with an errorMessage
    fail_message: str = "Robot crashed: the target site kept answering 503"
    never_finish: bool = False  # new runs stall while running, forever
    run_fault_robots: tuple[str, ...] = ()  # run faults hit only these robots' runs; (): all

    def __post_init__(self) -> None:
        self.export_drop_columns = tuple(self.export_drop_columns)
        self.run_fault_robots = tuple(self.run_fault_robots)
        self.export_shape_robots = tuple(self.export_shape_robots)
        if not 100 <= int(self.error_status) <= 599:
            raise ValueError(f"error_status must be an HTTP status, got {self.error_status!r}")
        if not 0.0 <= float(self.error_rate) <= 1.0:
            raise ValueError("error_rate must be between 0 and 1")
        if self.error_count < 0 or self.latency_seconds < 0:
            raise ValueError("error_count and latency_seconds must be >= 0")
        if not 0.0 <= self.export_truncate_fraction < 1.0:
            raise ValueError("export_truncate_fraction must be in [0, 1)")
        for name in ("latency_count", "export_count", "export_shape_count"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be >= 0 or None")
        if self.export_short_by < 0:
            raise ValueError("export_short_by must be >= 0")
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

    @property
    def shapes_exports(self) -> bool:
        """A shape fault is set."""
        return bool(
            self.export_short_by
            or self.export_nested_field
            or self.export_typeless
            or self.export_no_columns
        )

    def export_shape(self) -> ExportShape:
        """The shape of the file an export with these faults serves."""
        return ExportShape(
            extra_columns=self.export_extra_columns,
            drop_columns=tuple(self.export_drop_columns),
            nested_field=self.export_nested_field,
            typeless=self.export_typeless,
            short_by=self.export_short_by,
            no_columns=self.export_no_columns,
        )

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
        out["export_shape_robots"] = list(self.export_shape_robots)
        return out


#: The faults `export_count` counts down, cleared once it reaches 0.
COUNTED_EXPORT_FAULTS = (
    "export_cut_after_bytes",
    "export_corrupt",
    "export_corrupt_page",
    "export_truncate",
    "export_extra_columns",
    "export_drop_columns",
    "content_disposition_filename",
)
SHAPE_FAULTS = ("export_short_by", "export_nested_field", "export_typeless", "export_no_columns")


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

    def for_export(self, robot_id: str | None = None) -> Faults:
        """The faults one export body (of a run of `robot_id`) gets: a snapshot, with
        `export_count`, and `export_shape_count` if a shape fault hits it, used up by one."""
        defaults = Faults()
        with self._lock:
            f = self.faults
            snapshot = Faults.from_dict(f.to_dict())
            if f.export_count is not None:
                if f.export_count == 0:
                    for name in COUNTED_EXPORT_FAULTS:
                        setattr(snapshot, name, getattr(defaults, name))
                else:
                    f.export_count -= 1
            if f.shapes_exports:
                targeted = not f.export_shape_robots or robot_id in f.export_shape_robots
                if not targeted or f.export_shape_count == 0:
                    for name in SHAPE_FAULTS:
                        setattr(snapshot, name, getattr(defaults, name))
                elif f.export_shape_count is not None:
                    f.export_shape_count -= 1
            return snapshot
