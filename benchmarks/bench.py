"""``make bench``: the load path, polling and Dagster's overhead, measured in one run.

Every figure is measured in the same run on the same machine, and the load path is given as a
ratio to a limit measured in that run, repetition by repetition (the machine is shared: other
processes come and go, and a ratio survives that better than seconds). Contenders run in turn
within each repetition, each in its own process (own peak RSS), against the same export served
by the local emulator.

    python -m benchmarks              # full: 100k and 1M captures, 3 repetitions (~30 min)
    python -m benchmarks --quick      # 100k only: load path and polling (~2 min)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from extralt_dagster.api.client import ExtraltClient
from extralt_dagster.emulator import BROAD, FASHION, Catalogue, Emulator
from extralt_dagster.emulator.datagen import DEFAULT_CATALOGUE

from . import growth, polling, report, targets
from .procs import ROOT, ChildResult, mem_available_mb, python_child, run_child

CACHE = ROOT / "benchmarks" / ".cache"
RESULTS = ROOT / "benchmarks" / "results.json"
QUICK_RESULTS = CACHE / "results-quick.json"
DOC = ROOT / "BENCHMARKS.md"
#: Fixed, so a run's export (and so the emulator's cached file) is the same from one benchmark
#: to the next: a 1M-capture export is generated once (16-36 s), then read from the cache.
START_TIME = 1_767_225_600.0
#: Run ids are random unless the emulator is seeded; the cached export files are named by id.
EMULATOR_SEED = 0
ROBOT = "rbt_shoes"

TARGETS = {
    "history": 1.15,  # download + history load, against the limit
    "full": 1.6,  # the whole captures step, against the limit
    "peak_rss_mb": 1536.0,  # the captures step at 1M captures, default settings
    "two_tables": 1.25,  # the captures step against curl + CTAS history + CTAS flat offers
    "growth_load": 1.3,  # a load after 40 loads against the first
    "growth_query": 2.0,  # products scan and lookups after 40 loads against after 1
    "lookup_ms": 50.0,  # one product's latest capture, or its current offers
}
PEERS = ("peer_pandas", "peer_dlt", "peer_dagster_pandas")
#: Catalogue shapes the load path is measured at besides the emulator's own (issue 16): offers
#: per capture 7.0 (4 variants) and 30 (25 variants, fashion).
SHAPES = {"broad": BROAD, "fashion": FASHION}


def size_key(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0, "samples": []}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "samples": [round(v, 4) for v in values],
    }


class Log:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        elapsed = time.perf_counter() - self.started
        print(f"[{elapsed:7.1f}s] {message}", flush=True)


# --- Machine ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    def run(*cmd: str) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
            return out.rstrip()  # keep leading spaces: `free -h` aligns its header with them
        except OSError:
            return ""

    cpu = ""
    for line in run("lscpu").splitlines():
        if line.startswith("Model name:"):
            cpu = line.split(":", 1)[1].strip()
    versions = {}
    for name in (
        "duckdb",
        "dagster",
        "dagster-duckdb",
        "pyarrow",
        "httpx",
        "pandas",
        "dlt",
        "dagster-duckdb-pandas",
    ):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "nproc": os.cpu_count(),
        "free_h": run("free", "-h"),
        "cpu_model": cpu or platform.processor(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "curl": " ".join(run("curl", "--version").split()[:2]) if shutil.which("curl") else None,
        "git_head": run("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD").strip() or None,
        "warehouse_sha256": hashlib.sha256(
            b"".join(
                p.read_bytes()
                for p in sorted((ROOT / "extralt_dagster" / "warehouse").glob("*.py"))
            )
        ).hexdigest()[:12],
        "versions": versions,
        "loadavg_start": os.getloadavg(),
    }


# --- Part 1: the load path --------------------------------------------------------------------


class LoadBench:
    def __init__(
        self,
        sizes: list[int],
        *,
        repeat: int,
        peers: bool,
        work: Path,
        emulator_cache: Path,
        rss_cap_mb: float,
        log: Log,
        catalogue: Catalogue = DEFAULT_CATALOGUE,
        shape_only: bool = False,
        targets: list[str] | None = None,
    ) -> None:
        self.catalogue = catalogue
        #: The targets section (issue 17): curl, then per warehouse target its floor and ours.
        self.targets = targets or []
        #: Only what the shapes section compares: curl, the two-table floor and ours.
        self.shape_only = shape_only
        self.sizes = sorted(sizes)
        self.repeat = repeat
        self.peers = peers
        self.work = work
        self.emulator_cache = emulator_cache
        self.rss_cap_mb = rss_cap_mb
        self.log = log

    def run(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        with (
            Emulator(
                speed=0,
                rate_limit=None,
                cache_dir=self.emulator_cache,
                start_time=START_TIME,
                seed=EMULATOR_SEED,  # the same run ids every time, so the cached exports match
                catalogue=self.catalogue,
            ) as emu,
            # A first export of a big shape is generated inside its request: minutes.
            ExtraltClient(
                emu.api_key, emu.url, rate_limit_per_minute=None, timeout=1800.0
            ) as client,
        ):
            run_ids = {}
            for n in self.sizes:  # same order, same frozen clock: same run ids, same exports
                run_id = client.create_run(ROBOT, budget=n)
                emu.clock.advance(3 + n / 20)
                status = client.get_run(run_id).status.value
                if status != "completed":
                    raise RuntimeError(f"emulated run {run_id} is {status}, not completed")
                run_ids[n] = run_id
            for n in self.sizes:
                out[size_key(n)] = self._size(emu, client, n, run_ids[n])
        return out

    def _size(self, emu: Emulator, client: ExtraltClient, n: int, run_id: str) -> dict[str, Any]:
        work = self.work / f"load-{size_key(n)}{self.catalogue.key()}"
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        warm = client.download_export(run_id, work / "warm.parquet", "parquet")
        size = warm.stat().st_size
        warm.unlink()
        self.log(
            f"{n:,} captures: export of {size / 1e6:,.1f} MB ready in "
            f"{time.perf_counter() - t0:.1f}s (generated once, then cached in "
            f"{self.emulator_cache})"
        )
        base = {
            "base_url": emu.url,
            "api_key": emu.api_key,
            "run_id": run_id,
            "count": n,
            "export_dir": str(work),
            "home": str(work / "dagster-home"),
        }
        setup = python_child(
            "dagster_setup",
            "dagster_setup",
            {**base, "db": str(work / "setup.duckdb")},
            workdir=work,
        )
        if not setup.ok:
            raise RuntimeError(f"could not materialize the run asset: {setup.error}")
        samples: dict[str, list[ChildResult]] = {}
        failed_peers: dict[str, str] = {}
        big = n >= 500_000
        for rep in range(1, self.repeat + 1):
            for name, child in self._contenders(emu, run_id, base, work, big):
                if name in failed_peers:
                    continue
                result = child()
                for db in work.glob("*.duckdb*"):  # keep the disk and page cache lean
                    db.unlink(missing_ok=True)
                samples.setdefault(name, []).append(result)
                if result.ok:
                    self.log(
                        f"{n:,} rep {rep}/{self.repeat} {name}: "
                        f"{_seconds(result):.2f}s, peak RSS {result.peak_rss_mb:,.0f} MB"
                    )
                else:
                    self.log(f"{n:,} rep {rep}/{self.repeat} {name}: FAILED {result.error}")
                    if name in PEERS:
                        failed_peers[name] = result.error or "failed"
            (work / "limit.parquet").unlink(missing_ok=True)
        return self.summarize(n, size, samples, failed_peers)

    def summarize(
        self, n: int, size: int, samples: dict[str, list[ChildResult]], failed: dict[str, str]
    ) -> dict[str, Any]:
        if self.targets:
            return targets.summarize(n, size, samples, self.targets)
        return summarize_load(n, size, samples, failed)

    def _contenders(
        self, emu: Emulator, run_id: str, base: dict[str, Any], work: Path, big: bool
    ) -> Iterator[tuple[str, Callable[[], ChildResult]]]:
        file = work / "limit.parquet"
        url = f"{emu.url}/v0/extract/captures/export?run_id={run_id}&format=parquet"
        cap = {"rss_cap_mb": self.rss_cap_mb}
        curl = [
            "curl",
            "-sS",
            "-f",
            "-o",
            str(file),
            "-H",
            f"Authorization: Bearer {emu.api_key}",
            url,
        ]

        def child(
            name: str, kind: str, env: dict[str, str] | None = None, **params: Any
        ) -> Callable[[], ChildResult]:
            db = str(work / f"{name}.duckdb")
            timeout = 3600.0 if big else 900.0
            return lambda: python_child(
                name,
                kind,
                {**base, "db": db, "file": str(file), **params},
                workdir=work,
                timeout_seconds=timeout,
                env=env,
                **cap,
            )

        yield (
            "limit_curl",
            lambda: run_child(
                "limit_curl", curl, log_path=work / "children.log", timeout_seconds=600.0, **cap
            ),
        )
        if self.targets:
            yield from targets.contenders(self.targets, child, work)
            return
        if not self.shape_only:
            yield "limit_ctas_default", child("limit_ctas_default", "ctas", file=str(file))
        yield (
            "limit_ctas_pio",
            child("limit_ctas_pio", "ctas", file=str(file), preserve_insertion_order=False),
        )
        yield "limit_two_tables", child("limit_two_tables", "two_tables", file=str(file))
        yield "ours_dagster", child("ours_dagster", "ours_dagster")
        if not self.shape_only:
            yield "ours_history", child("ours_history", "ours_bare", history_only=True)
        yield "ours_bare", child("ours_bare", "ours_bare")
        if self.peers:
            for peer in PEERS:
                yield peer, child(peer, peer, home=str(work / f"dagster-home-{peer}"))


def _seconds(result: ChildResult) -> float:
    """A contender's time: its own measure when it reports one, else its process wall."""
    value = result.data.get("seconds")
    return float(value) if value is not None else result.wall_seconds


def _cpu(result: ChildResult) -> float | None:
    """CPU seconds over the same span as ``_seconds`` (the child's own, else its process)."""
    value = result.data.get("cpu_seconds")
    return float(value) if value is not None else result.cpu_seconds


def summarize_load(
    n: int, size: int, samples: dict[str, list[ChildResult]], failed: dict[str, str]
) -> dict[str, Any]:
    def ok(name: str) -> list[ChildResult]:
        return [r for r in samples.get(name, []) if r.ok]

    curl = ok("limit_curl")
    variants = {
        v: ok(f"limit_ctas_{v}") for v in ("default", "pio") if f"limit_ctas_{v}" in samples
    }
    if not curl or not variants or not all(variants.values()):
        errors = [r.error for rs in samples.values() for r in rs if not r.ok]
        raise RuntimeError(f"the limit could not be measured at {n:,}: {errors}")
    best = min(variants, key=lambda v: statistics.median(_seconds(r) for r in variants[v]))
    reps = min(len(curl), len(variants[best]))
    limit = [curl[i].wall_seconds + _seconds(variants[best][i]) for i in range(reps)]
    limit_rss = [max(curl[i].peak_rss_mb, variants[best][i].peak_rss_mb) for i in range(reps)]
    limit_cpu = [
        (curl[i].cpu_seconds or 0.0) + (_cpu(variants[best][i]) or 0.0) for i in range(reps)
    ]
    limit_median = statistics.median(limit)
    limit_cpu_median = statistics.median(limit_cpu)

    rows: dict[str, Any] = {}

    def row(
        name: str,
        values: list[float],
        rss: list[float],
        cpu: list[float | None] | None = None,
        **extra: Any,
    ) -> None:
        ratios = [v / limit[i] for i, v in enumerate(values) if i < len(limit)]
        cpus = [c for c in cpu or [] if c is not None]
        rows[name] = {
            "seconds": stats(values),
            "ratio": statistics.median(values) / limit_median if values else None,
            "ratio_min": min(ratios) if ratios else None,
            "ratio_max": max(ratios) if ratios else None,
            "peak_rss_mb": stats(rss),
            "cpu_seconds": stats(cpus),
            "cpu_ratio": statistics.median(cpus) / limit_cpu_median if cpus else None,
            **extra,
        }

    row("limit", limit, limit_rss, limit_cpu, variant=best)
    row(
        "limit_curl",
        [r.wall_seconds for r in curl],
        [r.peak_rss_mb for r in curl],
        [r.cpu_seconds for r in curl],
    )
    for v, results in variants.items():
        row(
            f"limit_ctas_{v}",
            [_seconds(r) for r in results],
            [r.peak_rss_mb for r in results],
            [_cpu(r) for r in results],
        )
    dag = ok("ours_dagster")
    rss = [r.peak_rss_mb for r in dag]
    if dag:
        row(
            "ours_step",
            [r.data["step_seconds"] for r in dag],
            rss,
            [_cpu(r) for r in dag],
            materialize_seconds=stats([r.data["materialize_seconds"] for r in dag]),
            rows=dag[0].data["rows"],
            variants=dag[0].data["variants"],
        )
        row(
            "ours_metadata",
            [r.data["metadata_seconds"] for r in dag],
            rss,
            download_seconds=stats([r.data["download_seconds"] for r in dag]),
            load_seconds=stats([r.data["load_seconds"] for r in dag]),
        )
    for name in ("ours_bare", "ours_history"):
        results = ok(name)
        if results:
            row(
                name,
                [_seconds(r) for r in results],
                [r.peak_rss_mb for r in results],
                [_cpu(r) for r in results],
                download_seconds=stats([r.data["download_seconds"] for r in results]),
                load_seconds=stats([r.data["load_seconds"] for r in results]),
                phase_seconds={
                    k: statistics.median(r.data["phase_seconds"].get(k, 0.0) for r in results)
                    for k in results[0].data["phase_seconds"]
                },
                settings=results[0].data.get("settings"),
            )
    bare = ok("ours_bare")
    if bare:
        row(
            "ours_history_phases",
            [r.data["history_by_phases_seconds"] for r in bare],
            [r.peak_rss_mb for r in bare],
        )
    for peer in PEERS:
        results = ok(peer)
        if results:
            row(
                peer,
                [_seconds(r) for r in results],
                [r.peak_rss_mb for r in results],
                [_cpu(r) for r in results],
                laps={
                    k: statistics.median(r.data["laps"][k] for r in results)
                    for k in results[0].data.get("laps", {})
                },
                **{k: results[0].data[k] for k in ("nested_types",) if k in results[0].data},
            )
        elif peer in samples:
            first = samples[peer][0]
            rows[peer] = {
                "error": failed.get(peer) or first.error,
                "seconds_before_failure": first.wall_seconds,
                "peak_rss_mb_before_failure": first.peak_rss_mb,
            }
    _two_table_floor(rows, curl, ok("limit_two_tables"), dag, bare)
    errors = {
        name: [r.error for r in results if not r.ok]
        for name, results in samples.items()
        if any(not r.ok for r in results)
    }
    return {"captures": n, "export_bytes": size, "rows": rows, "errors": errors}


def _two_table_floor(
    rows: dict[str, Any],
    curl: list[ChildResult],
    two: list[ChildResult],
    dag: list[ChildResult],
    bare: list[ChildResult],
) -> None:
    """The floor of a step that writes history and its flat offers (issue 16): curl, then a
    bare CTAS of each. Ours against it, repetition by repetition."""
    reps = min(len(curl), len(two))
    if not reps:
        return
    floor = [curl[i].wall_seconds + _seconds(two[i]) for i in range(reps)]
    rows["limit_two_tables"] = {
        "seconds": stats(floor),
        "peak_rss_mb": stats([max(curl[i].peak_rss_mb, two[i].peak_rss_mb) for i in range(reps)]),
        "offers": two[0].data.get("offers"),
    }
    for name, results, value in (
        ("ours_step", dag, lambda r: r.data["step_seconds"]),
        ("ours_bare", bare, _seconds),
    ):
        ratios = [value(r) / floor[i] for i, r in enumerate(results) if i < reps]
        if name in rows and ratios:
            rows[name]["ratio_two_tables"] = statistics.median(ratios)
            rows[name]["ratio_two_tables_max"] = max(ratios)


# --- History growth ----------------------------------------------------------------------------


def growth_bench(
    checkpoints: list[int], products: int, cache: Path, work: Path, rss_cap: float, log: Log
) -> dict[str, Any]:
    """``growth``: ``max(checkpoints)`` nightly loads of the same products, in one child."""
    loads = max(checkpoints)
    t0 = time.perf_counter()
    files = growth.export_paths(cache / "growth", products, loads)
    log(
        f"growth: {loads} exports of {products:,} captures ready in {time.perf_counter() - t0:.0f}s"
    )
    folder = work / "growth"
    folder.mkdir(parents=True, exist_ok=True)
    result = python_child(
        "growth",
        "growth",
        {
            "db": str(folder / "growth.duckdb"),
            "files": [str(f) for f in files],
            "checkpoints": checkpoints,
        },
        workdir=folder,
        timeout_seconds=3600.0,
        rss_cap_mb=rss_cap,
    )
    if not result.ok:
        raise RuntimeError(f"the growth benchmark failed: {result.error}")
    every = result.data["load_seconds"]
    out: dict[str, Any] = {"products": products, "load_seconds": every, "at": {}}
    for n in checkpoints:
        at = result.data["at"][str(n)]
        # One load's time is noisy: the median of the last three loads up to this one.
        recent = every[max(0, n - 3) : n]
        out["at"][str(n)] = {**at, "recent_load_seconds": statistics.median(recent)}
        log(
            f"growth after {n} loads: load {at['load_seconds']:.2f}s, products scan "
            f"{at['products_scan']['seconds'] * 1000:.0f} ms, lookup "
            f"{at['product_lookup']['seconds'] * 1000:.1f} ms, offers lookup "
            f"{at['offers_lookup']['seconds'] * 1000:.1f} ms, {at['file_bytes'] / 1e9:.2f} GB"
        )
    return out


# --- Part 3: Dagster's overhead ---------------------------------------------------------------


def overhead(repeat: int, work: Path, log: Log, count: int = 100) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    cli_home = work / "dagster-home-cli"
    cli_home.mkdir(parents=True, exist_ok=True)
    project_yaml = ROOT / "dagster.yaml"
    if project_yaml.exists():
        shutil.copy(project_yaml, cli_home / "dagster.yaml")
    dagster = str(Path(sys.executable).with_name("dagster"))
    samples: dict[str, list[ChildResult]] = {}
    with Emulator(speed=1000, rate_limit=None) as emu:
        base = {
            "base_url": emu.url,
            "api_key": emu.api_key,
            "count": count,
            "export_dir": str(work),
            "home": str(work / "dagster-home-inprocess"),
        }

        def in_child(module: str, db: str) -> Callable[[], ChildResult]:
            params = {**base, "db": str(work / db)}
            return lambda: python_child(module, module, params, workdir=work, timeout_seconds=300)

        runs: list[tuple[str, Callable[[], ChildResult]]] = [
            ("bare_script", in_child("overhead_bare", "bare.duckdb")),
            ("dg_materialize", in_child("overhead_inprocess", "inprocess.duckdb")),
            ("dagster_cli", lambda: _cli(dagster, emu.url, cli_home, work, count)),
        ]
        for rep in range(1, repeat + 1):
            for name, child in runs:
                result = child()
                samples.setdefault(name, []).append(result)
                if not result.ok:
                    raise RuntimeError(f"overhead {name} failed: {result.error}")
                log(
                    f"overhead rep {rep}/{repeat} {name}: process {result.wall_seconds:.2f}s"
                    + (f", work {result.data['seconds']:.2f}s" if "seconds" in result.data else "")
                )
    out: dict[str, Any] = {"captures": count}
    for name, results in samples.items():
        out[name] = {
            "process_seconds": stats([r.wall_seconds for r in results]),
            "work_seconds": stats([r.data["seconds"] for r in results if "seconds" in r.data]),
            "peak_rss_mb": stats([r.peak_rss_mb for r in results]),
        }
    bare = out["bare_script"]["process_seconds"]["median"]
    cli = out["dagster_cli"]["process_seconds"]["median"]
    out["dagster_overhead_seconds"] = cli - bare
    out["dagster_overhead_ratio"] = cli / bare
    inproc = out["dg_materialize"]["work_seconds"]["median"]
    out["in_process_overhead_seconds"] = inproc - out["bare_script"]["work_seconds"]["median"]
    return out


def _cli(dagster: str, url: str, home: Path, work: Path, count: int) -> ChildResult:
    db = work / "cli.duckdb"
    for suffix in ("", ".wal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    argv = [
        dagster,
        "asset",
        "materialize",
        "-f",
        str(ROOT / "benchmarks" / "overhead_defs.py"),
        "--select",
        "extralt/bench/run,extralt/bench/captures",
    ]
    env = {
        "DAGSTER_HOME": str(home),
        "BENCH_BASE_URL": url,
        "BENCH_DUCKDB_PATH": str(db),
        "BENCH_EXPORT_DIR": str(work),
        "BENCH_COUNT": str(count),
    }
    result = run_child("dagster_cli", argv, log_path=work / "cli.log", env=env, timeout_seconds=300)
    if result.ok:
        import duckdb

        with duckdb.connect(str(db), read_only=True) as con:
            (rows,) = con.execute("SELECT count(*) FROM extralt.bench_captures").fetchone() or (0,)
        if rows != count:
            result.ok, result.error = False, f"expected {count} rows in DuckDB, found {rows}"
    return result


# --- Results ----------------------------------------------------------------------------------


def flatten(results: dict[str, Any]) -> dict[str, Any]:
    """The headline keys, at the top level of results.json."""
    flat: dict[str, Any] = {}
    for key, size in results.get("load", {}).items():
        rows = size["rows"]

        def ratio(name: str, rows: dict[str, Any] = rows) -> float | None:
            value = rows.get(name, {}).get("ratio")
            return None if value is None else round(value, 3)

        flat[f"limit_seconds_{key}"] = round(rows["limit"]["seconds"]["median"], 3)
        flat[f"load_ratio_history_{key}"] = ratio("ours_history")
        flat[f"load_ratio_history_phases_{key}"] = ratio("ours_history_phases")
        flat[f"load_ratio_full_{key}"] = ratio("ours_metadata")
        flat[f"step_ratio_full_{key}"] = ratio("ours_step")
        flat[f"bare_ratio_full_{key}"] = ratio("ours_bare")
        for name in ("ours_history", "ours_bare", "ours_step"):
            value = rows.get(name, {}).get("cpu_ratio")
            flat[f"cpu_ratio_{name.removeprefix('ours_')}_{key}"] = (
                None if value is None else round(value, 3)
            )
        if "ours_step" in rows:
            flat[f"peak_rss_mb_{key}"] = round(rows["ours_step"]["peak_rss_mb"]["max"])
        if "ours_bare" in rows:
            flat[f"peak_rss_mb_bare_{key}"] = round(rows["ours_bare"]["peak_rss_mb"]["max"])
        for peer in PEERS:
            if peer in rows:
                short = peer.removeprefix("peer_")
                flat[f"peer_ratio_{short}_{key}"] = ratio(peer)
                rss = rows[peer].get("peak_rss_mb", {}).get("max")
                flat[f"peer_peak_rss_mb_{short}_{key}"] = None if rss is None else round(rss)
                if "error" in rows[peer]:
                    flat[f"peer_error_{short}_{key}"] = rows[peer]["error"]
    poll = results.get("polling")
    if poll:
        for sched, data in poll["schedules"].items():
            suffix = "" if sched == "adaptive" else f"_{sched}"
            for label, run in data["runs"].items():
                flat[f"requests_per_run_{label}{suffix}"] = run["requests"]["median"]
                flat[f"notice_latency_seconds_{label}{suffix}"] = run["latency_seconds"]["median"]
                flat[f"notice_latency_mean_seconds_{label}{suffix}"] = round(
                    run["sweep_latency_seconds"]["mean"], 3
                )
    ov = results.get("overhead")
    if ov:
        flat["dagster_overhead_seconds"] = round(ov["dagster_overhead_seconds"], 3)
        flat["dagster_overhead_ratio"] = round(ov["dagster_overhead_ratio"], 3)
    return flat


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target against the largest size measured."""
    load = results.get("load", {})
    if not load:
        return []
    key = max(load, key=lambda k: load[k]["captures"])
    rows = load[key]["rows"]
    out = []

    def check(name: str, value: float | None, limit: float, what: str) -> None:
        out.append(
            {
                "target": name,
                "size": key,
                "what": what,
                "value": value,
                "limit": limit,
                "met": value is not None and value <= limit,
            }
        )

    check(
        "history load",
        rows.get("ours_history", {}).get("ratio"),
        TARGETS["history"],
        "download + history load (variants off), ratio to the limit",
    )
    check(
        "whole step",
        rows.get("ours_step", {}).get("ratio"),
        TARGETS["full"],
        "captures step wall in Dagster, ratio to the limit",
    )
    check(
        "whole step (metadata)",
        rows.get("ours_metadata", {}).get("ratio"),
        TARGETS["full"],
        "download + load seconds from the asset's metadata, ratio to the limit",
    )
    rss = rows.get("ours_step", {}).get("peak_rss_mb", {}).get("max")
    check("peak RSS", rss, TARGETS["peak_rss_mb"], "captures step process, MB, worst repetition")
    for name, size in report._shape_sizes(results):
        step = size["rows"].get("ours_step", {})
        key = f"{name} {size_key(size['captures'])}"
        out.append(
            _verdict(
                "two-table floor",
                key,
                step.get("ratio_two_tables"),
                TARGETS["two_tables"],
                "captures step / (curl + CTAS history + CTAS offers)",
            )
        )
        out.append(
            _verdict(
                "peak RSS",
                key,
                step.get("peak_rss_mb", {}).get("max"),
                TARGETS["peak_rss_mb"],
                "captures step process, MB, worst repetition",
            )
        )
    out.extend(_growth_verdicts(results.get("growth")))
    return out


def _verdict(
    target: str, size: str, value: float | None, limit: float, what: str
) -> dict[str, Any]:
    met = value is not None and value <= limit
    return {
        "target": target,
        "size": size,
        "what": what,
        "value": value,
        "limit": limit,
        "met": met,
    }


def _growth_verdicts(g: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Issue 16: after the most loads, queries within 2x of one load's, lookups under 50 ms,
    the load within 1.3x of the first."""
    if not g or len(g["at"]) < 2:
        return []
    first, last_key = g["at"]["1"], max(g["at"], key=int)
    last = g["at"][last_key]
    size = f"{last_key} loads"
    out = [
        _verdict(
            "growth load",
            size,
            last["recent_load_seconds"] / first["load_seconds"],
            TARGETS["growth_load"],
            "load (median of the last 3) / the first load",
        )
    ]
    for query in ("products_scan", "product_lookup", "offers_lookup"):
        ratio = last[query]["seconds"] / first[query]["seconds"]
        out.append(
            _verdict(
                f"growth {query}",
                size,
                ratio,
                TARGETS["growth_query"],
                f"{query} / its time after 1 load",
            )
        )
    for query in ("product_lookup", "offers_lookup"):
        out.append(
            _verdict(
                f"growth {query} ms",
                size,
                last[query]["seconds"] * 1000,
                TARGETS["lookup_ms"],
                f"{query}, milliseconds",
            )
        )
    return out


def update_doc(text: str, path: Path = DOC) -> bool:
    """Replace the generated block of BENCHMARKS.md; False if its markers are missing."""
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    if not path.exists():
        return False
    doc = path.read_text()
    if begin not in doc or end not in doc:
        return False
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text}\n{end}{tail}")
    return True


# --- Entry point ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="100k captures, load path and polling only"
    )
    parser.add_argument("--sizes", help="comma-separated capture counts (default 100000,1000000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument(
        "--no-peers", action="store_true", help="skip pandas, dlt and the IO manager"
    )
    parser.add_argument(
        "--shapes",
        help=f"catalogue shapes to load at the largest size besides the emulator's "
        f"({', '.join(SHAPES)}; default all, none with --quick; '' for none)",
    )
    parser.add_argument(
        "--growth",
        help="loads after which to measure history growth (default 1,10,40; 1,10 with --quick;"
        " '' for none)",
    )
    parser.add_argument(
        "--growth-products", type=int, default=100_000, help="products per load (100000)"
    )
    parser.add_argument(
        "--targets",
        help=f"warehouse targets to load side by side at every size ({', '.join(targets.TARGET_NAMES)};"
        " default all, file,ducklake with --quick; '' for none)",
    )
    parser.add_argument(
        "--targets-only",
        action="store_true",
        help="only the warehouse targets section (no load path, shapes, growth, polling, overhead)",
    )
    parser.add_argument("--no-polling", action="store_true")
    parser.add_argument("--no-overhead", action="store_true")
    parser.add_argument("--out", type=Path, help="results JSON (default benchmarks/results.json)")
    parser.add_argument("--cache-dir", type=Path, default=CACHE, help="generated data and scratch")
    parser.add_argument(
        "--update-doc", action="store_true", help="rewrite the table in BENCHMARKS.md"
    )
    parser.add_argument(
        "--keep-work", action="store_true", help="keep the scratch folder (logs) for a look"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    default_sizes = "100000" if args.quick else "100000,1000000"
    args.sizes = [int(s.replace("_", "")) for s in (args.sizes or default_sizes).split(",")]
    args.peers = not (args.no_peers or args.quick)
    shapes = args.shapes if args.shapes is not None else ("" if args.quick else ",".join(SHAPES))
    args.shapes = [x for x in shapes.split(",") if x]
    unknown = set(args.shapes) - set(SHAPES)
    if unknown:
        parser.error(f"--shapes: unknown {sorted(unknown)}; choose from {', '.join(SHAPES)}")
    chosen = args.targets
    if chosen is None:
        chosen = "file,ducklake" if args.quick else ",".join(targets.TARGET_NAMES)
    args.targets = [x for x in chosen.split(",") if x]
    unknown = set(args.targets) - set(targets.TARGET_NAMES)
    if unknown:
        parser.error(
            f"--targets: unknown {sorted(unknown)}; choose from {', '.join(targets.TARGET_NAMES)}"
        )
    growth_loads = args.growth if args.growth is not None else ("1,10" if args.quick else "1,10,40")
    args.growth = sorted({int(x) for x in growth_loads.split(",") if x})
    if any(x < 1 for x in args.growth):
        parser.error("--growth: load counts must be at least 1")
    # Everyday use: the load path and polling. Dagster's overhead (its CLI alone spends ~15 s a
    # run here) and the peers (minutes at 100k) are for the full run.
    args.no_overhead = args.no_overhead or args.quick or args.targets_only
    if args.targets_only:
        args.no_polling, args.shapes, args.growth, args.peers = True, [], [], False
    if args.out is None:
        args.out = QUICK_RESULTS if args.quick else RESULTS
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = Log()
    cache: Path = args.cache_dir.resolve()
    work = cache / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rss_cap = min(16_000.0, 0.9 * mem_available_mb())
    info = machine()
    log(
        f"{info['nproc']} cores, {info['cpu_model']}, load average {info['loadavg_start']}, "
        f"child memory cap {rss_cap:,.0f} MB"
    )
    results: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "argv": sys.argv[1:] if argv is None else argv,
        "repeat": args.repeat,
        "targets": TARGETS,
        "machine": info,
    }
    started = time.perf_counter()
    results["load"] = (
        {}
        if args.targets_only
        else LoadBench(
            args.sizes,
            repeat=args.repeat,
            peers=args.peers,
            work=work,
            emulator_cache=cache / "emulator",
            rss_cap_mb=rss_cap,
            log=log,
        ).run()
    )
    if args.shapes:
        results["shapes"] = {
            name: LoadBench(
                [max(args.sizes)],
                repeat=args.repeat,
                peers=False,
                work=work,
                emulator_cache=cache / "emulator",
                rss_cap_mb=rss_cap,
                log=log,
                catalogue=SHAPES[name],
                shape_only=True,
            ).run()
            for name in args.shapes
        }
    chosen = targets.available(args.targets, log)
    if chosen:
        results["warehouse_targets"] = LoadBench(
            args.sizes,
            repeat=args.repeat,
            peers=False,
            work=work / "targets",  # its own Dagster instance: the run tag is followed afresh
            emulator_cache=cache / "emulator",
            rss_cap_mb=rss_cap,
            log=log,
            targets=chosen,
        ).run()
    if args.growth:
        results["growth"] = growth_bench(
            args.growth, args.growth_products, cache, work, rss_cap, log
        )
    if not args.no_polling:
        log("polling: simulating 30 s and 5 min runs")
        results["polling"] = polling.measure(
            {"30s": 30.0, "5min": 300.0}, repeat=max(3, args.repeat)
        )
    if not args.no_overhead:
        results["overhead"] = overhead(args.repeat, work / "overhead", log)
    info["loadavg_end"] = os.getloadavg()
    results["bench_seconds"] = time.perf_counter() - started
    results["verdicts"] = verdicts(results)
    results = {**flatten(results), **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    table = report.render(results)
    print()
    print(table)
    print(f"\nwrote {args.out}")
    if args.update_doc:
        with contextlib.suppress(OSError):
            if update_doc(report.render_doc(results)):
                print(f"updated {DOC}")
            else:
                print(f"{DOC} has no <!-- bench:begin --> / <!-- bench:end --> markers")
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return 0
