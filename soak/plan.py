"""The soak's plan: which sources each round (one Dagster run) materializes, with which faults.

Everything comes from one seed, so a soak can be replayed: the same seed gives the same rounds,
the same sources, the same faults with the same parameters and victims. (Which request a fault
lands on still depends on timing: the steps run in parallel processes.)
"""

import random
from dataclasses import dataclass, field
from typing import Any

from .config import CAPPED_RUNS, CAPPED_SOURCE, REQUEST_TIMEOUT_SECONDS, SOURCES, run_op

RUNS = "/v0/extract/runs"
RUN = "/v0/extract/runs/*"
EXPORT = "/v0/extract/captures/export"
#: Where request faults may land: every API request, polls, creates, or exports.
MATCHES = ("*", f"GET {RUN}", f"POST {RUNS}", f"GET {EXPORT}")

#: Fault kinds by category. A round gets at most one fault of each category, because each
#: category drives its own fields of the emulator's `Faults`.
KINDS: dict[str, tuple[str, ...]] = {
    "error": (
        "429_retry_after",
        "429_no_retry_after",
        "http_500",
        "http_502",
        "http_503",
        "http_504",
        "ambiguous_create",
    ),
    "latency": ("read_timeout",),
    "export": ("export_cut", "export_corrupt", "export_truncate"),
    "run": (
        "remote_failure",
        "external_stop",
        "stuck_past_timeout",
        "terminated_mid_poll",
        "step_killed",
    ),
    # `load_killed`: the DuckDB file is held from the round's start; the first captures step
    # downloads its export, waits for the lock, and is SIGKILLed while it waits.
    "lock": ("duckdb_lock", "load_killed"),
    # Export shapes: a whole, valid export of one victim's robot, of a shape the docs allow.
    # `typeless_export` nulls prices, stock and options with no type at all (in round 0, the
    # victim's first run: its later runs must still load with the documented types);
    # `nested_field` gives every offer a field the docs omit (`variants[].offers[].warranty`).
    "shape": ("typeless_export", "nested_field"),
}
#: Shapes are dealt from their own random stream, so adding them left every other fault of a
#: seed's plan as it was.
SHAPE_STREAM = "extralt-soak-shapes"
ALL_KINDS = tuple(k for kinds in KINDS.values() for k in kinds)
#: Large soaks: the chance that a round gets a fault of each category.
CATEGORY_ODDS = {
    "error": 0.8,
    "latency": 0.35,
    "export": 0.5,
    "run": 0.6,
    "lock": 0.25,
    "shape": 0.3,
}

SIZES: dict[str, tuple[int, int]] = {
    # name: (rounds, sources per round)
    "small": (8, 5),  # 40 source materializations: the CI-sized soak in `make test`
    "large": (30, 5),  # 150: `make soak`
}
STUCK_POLL_TIMEOUT_SECONDS = 1.5


@dataclass
class Fault:
    kind: str
    category: str
    params: dict[str, Any] = field(default_factory=dict)
    victim: str | None = None  # the source a run fault targets

    def describe(self) -> str:
        bits = [f"{k}={v}" for k, v in self.params.items()]
        if self.victim:
            bits.insert(0, f"victim={self.victim}")
        return f"{self.kind}({', '.join(bits)})"

    def emulator_fields(self) -> dict[str, Any]:
        """This fault's fields of the emulator's `Faults`."""
        p = self.params
        if self.category == "error":
            if self.kind == "ambiguous_create":
                return {
                    "error_status": 502,
                    "error_count": p["count"],
                    "error_after_handling": True,
                    "match": p["match"],
                }
            status = 429 if self.kind.startswith("429") else int(self.kind.removeprefix("http_"))
            fields = {"error_status": status, "error_count": p["count"], "match": p["match"]}
            if self.kind == "429_retry_after":
                fields["retry_after"] = p["retry_after"]
            return fields
        if self.kind == "read_timeout":
            return {
                "latency_seconds": p["latency_seconds"],
                "latency_count": p["count"],
                "match": p["match"],
            }
        if self.category == "shape":
            shape = "export_typeless" if self.kind == "typeless_export" else "export_nested_field"
            return {shape: True, "export_shape_robots": [self.victim_robot]}
        if self.category == "export":
            fields: dict[str, Any] = {"export_count": p["count"]}
            if self.kind == "export_cut":
                fields["export_cut_after_bytes"] = p["cut_after_bytes"]
            elif self.kind == "export_corrupt":
                fields["export_corrupt"] = True
            else:
                fields["export_truncate"] = True
            return fields
        if self.kind == "remote_failure":
            return {
                "fail_runs": True,
                "fail_message": p["message"],
                "run_fault_robots": [self.victim_robot],
            }
        if self.kind in (
            "external_stop",
            "stuck_past_timeout",
            "terminated_mid_poll",
            "step_killed",
        ):
            return {"never_finish": True, "run_fault_robots": [self.victim_robot]}
        return {}  # duckdb_lock and load_killed are the runner's, not the emulator's

    @property
    def victim_robot(self) -> str:
        return next(s.robot_id for s in SOURCES if s.name == self.victim)


@dataclass
class Round:
    index: int
    sources: list[str]
    faults: list[Fault]

    @property
    def asset_keys(self) -> list[str]:
        return [f"extralt/{s}/{part}" for s in self.sources for part in ("run", "captures")]

    def emulator_faults(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for fault in self.faults:
            merged.update(fault.emulator_fields())
        return merged

    def run_config(self) -> dict[str, Any]:
        ops: dict[str, Any] = {}
        for fault in self.faults:
            if fault.kind == "stuck_past_timeout":
                config = {"poll_timeout_seconds": STUCK_POLL_TIMEOUT_SECONDS}
                ops[run_op(fault.victim)] = {"config": config}
        return {"ops": ops} if ops else {}

    def fault(self, category: str) -> Fault | None:
        return next((f for f in self.faults if f.category == category), None)

    def describe(self) -> str:
        faults = "; ".join(f.describe() for f in self.faults) or "no faults"
        return f"round {self.index}: {', '.join(self.sources)} | {faults}"


@dataclass
class Plan:
    seed: int
    size: str
    rounds: list[Round]

    @property
    def materializations(self) -> int:
        """Source materializations planned (a source's `run` and `captures` in one round)."""
        return sum(len(r.sources) for r in self.rounds)

    @property
    def capped_rounds(self) -> list[int]:
        """The rounds that materialize the source with a credit cap."""
        return [r.index for r in self.rounds if CAPPED_SOURCE in r.sources]

    @property
    def expected_refusals(self) -> int:
        """Materializations of the capped source its cap must refuse, at least: each one it
        admits completes a run at its worst case, so `CAPPED_RUNS` of them fill the month."""
        return max(0, len(self.capped_rounds) - CAPPED_RUNS)

    def fault_mix(self) -> dict[str, int]:
        mix = dict.fromkeys(ALL_KINDS, 0)
        for r in self.rounds:
            for f in r.faults:
                mix[f.kind] += 1
        return mix


def make_plan(size: str = "small", seed: int = 7, rounds: int | None = None) -> Plan:
    """The rounds for a soak. Small soaks deal every fault kind out at least once."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    rng = random.Random(f"extralt-soak:{seed}")
    n_rounds, per_round = SIZES[size]
    n_rounds = rounds or n_rounds
    names = [s.name for s in SOURCES]
    plan_rounds = [Round(i, sorted(rng.sample(names, per_round)), []) for i in range(n_rounds)]

    assigned: dict[int, dict[str, str]] = {i: {} for i in range(n_rounds)}
    for category, kinds in KINDS.items():
        if category == "shape":
            continue  # dealt below, from its own stream
        cycle = list(kinds)
        rng.shuffle(cycle)
        # Every kind once, each in its own round; then, in a large soak, more at random.
        dealt = rng.sample(range(n_rounds), min(len(cycle), n_rounds))
        for kind, i in zip(cycle, dealt, strict=False):
            assigned[i][category] = kind
        if size == "small":
            continue
        position = len(dealt)
        for i in range(n_rounds):
            if i not in dealt and rng.random() < CATEGORY_ODDS[category]:
                assigned[i][category] = cycle[position % len(cycle)]
                position += 1
    for r in plan_rounds:
        for category in KINDS:  # in a fixed order, so the seed alone decides everything
            kind = assigned[r.index].get(category)
            if kind is not None:
                r.faults.append(_fault(rng, category, kind, r.sources))
        error, latency = r.fault("error"), r.fault("latency")
        if error is not None and latency is not None:
            latency.params["match"] = error.params["match"]  # the emulator has one `match`
    _deal_shapes(random.Random(f"{SHAPE_STREAM}:{seed}"), plan_rounds, size)
    return Plan(seed=seed, size=size, rounds=plan_rounds)


def _deal_shapes(rng: random.Random, rounds: list[Round], size: str) -> None:
    """A type-less export in round 0 (every source's first run there), a nested field in
    another round; in a large soak, more of either at random."""
    kinds = KINDS["shape"]
    dealt = {0: kinds[0]}
    if len(rounds) > 1:
        dealt[rng.randrange(1, len(rounds))] = kinds[1]
    if size != "small":
        for r in rounds:
            if r.index not in dealt and rng.random() < CATEGORY_ODDS["shape"]:
                dealt[r.index] = rng.choice(kinds)
    for index, kind in sorted(dealt.items()):
        rnd = rounds[index]
        rnd.faults.append(Fault(kind, "shape", {}, victim=rng.choice(rnd.sources)))


def _fault(rng: random.Random, category: str, kind: str, sources: list[str]) -> Fault:
    if category == "error":
        if kind == "ambiguous_create":
            # Either the create alone answers 502 after starting the run (the client looks the
            # run up and adopts it), or the look-up fails too (the step's retry adopts it).
            match, count = rng.choice([(f"POST {RUNS}", 1), (f"* {RUNS}", 3)])
            return Fault(kind, category, {"match": match, "count": count})
        params: dict[str, Any] = {"match": rng.choice(MATCHES), "count": rng.randint(1, 5)}
        if kind == "429_retry_after":
            params["retry_after"] = 1
        return Fault(kind, category, params)
    if category == "latency":
        return Fault(
            kind,
            category,
            {
                "match": rng.choice(MATCHES),
                "count": rng.randint(1, 4),
                "latency_seconds": REQUEST_TIMEOUT_SECONDS + 1.0,
            },
        )
    if category == "export":
        params = {"count": rng.randint(1, 3)}
        if kind == "export_cut":
            params = {"count": rng.randint(1, 4), "cut_after_bytes": rng.randint(256, 8192)}
        return Fault(kind, category, params)
    if category == "run":
        victim = rng.choice(sources)
        params = {}
        if kind == "remote_failure":
            params["message"] = rng.choice(
                [
                    "Robot crashed: the target site kept answering 503",
                    "Robot blocked by the site's bot protection",
                    "Proxy pool exhausted",
                ]
            )
        return Fault(kind, category, params, victim=victim)
    if kind == "load_killed":
        return Fault(kind, category)
    return Fault(kind, category, {"hold_seconds": round(rng.uniform(2.0, 5.0), 1)})
