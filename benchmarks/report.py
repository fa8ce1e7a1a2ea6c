"""The table ``make bench`` prints, and the block it writes into BENCHMARKS.md."""

from __future__ import annotations

from typing import Any

from . import targets

LOAD_ROWS: tuple[tuple[str, str], ...] = (
    ("limit", "LIMIT  curl -o + bare DuckDB CTAS ({variant})"),
    ("limit_curl", "         curl -o alone"),
    ("limit_ctas_default", "         DuckDB CTAS, defaults"),
    ("limit_ctas_pio", "         DuckDB CTAS, preserve_insertion_order=false"),
    ("ours_step", "OURS   captures step in Dagster (step wall)"),
    ("ours_metadata", "OURS   download + load (asset metadata)"),
    ("ours_bare", "OURS   download + load, all tables (no Dagster)"),
    ("ours_history", "OURS   download + history load (variants off)"),
    ("ours_history_phases", "OURS   download + prepare + history phases (no commit)"),
    ("peer_pandas", "USERS  httpx .content -> pyarrow -> pandas -> DuckDB"),
    ("peer_dlt", "USERS  dlt, Arrow table -> DuckDB"),
    ("peer_dagster_pandas", "USERS  dagster-duckdb-pandas IO manager (step wall)"),
)
#: Rows whose CPU covers the whole ``dg.materialize`` call, not the step alone.
CPU_OF_CALL = ("ours_step", "peer_dagster_pandas")
TARGET_OF = {"ours_step": "full", "ours_metadata": "full", "ours_history": "history"}


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def _range(stats: dict[str, Any], fmt: str = "{:.2f}") -> str:
    if not stats or stats.get("median") is None:
        return "-"
    return f"{_num(stats['median'], fmt)} [{_num(stats['min'], fmt)}-{_num(stats['max'], fmt)}]"


def load_table(size: dict[str, Any], targets: dict[str, float]) -> list[str]:
    rows = size["rows"]
    mb = size["export_bytes"] / 1e6
    lines = [
        f"Load path, {size['captures']:,} captures ({mb:,.1f} MB zstd parquet, served by the "
        "emulator)",
        f"{'':55} {'ratio [min-max]':>19} {'target':>6} {'seconds [min-max]':>23} "
        f"{'peak RSS MB':>11} {'CPU ratio':>9}",
    ]
    for name, label in LOAD_ROWS:
        row = rows.get(name)
        if row is None:
            continue
        label = label.format(variant=row.get("variant", ""))
        if "error" in row:
            lines.append(
                f"{label:55} {'FAILED':>19} {'':>6} "
                f"{'after ' + _num(row['seconds_before_failure'], '{:.0f}') + ' s':>23} "
                f"{_num(row['peak_rss_mb_before_failure'], '{:,.0f}'):>11}  {row['error']}"
            )
            continue
        ratio = f"{_num(row['ratio'])} [{_num(row['ratio_min'])}-{_num(row['ratio_max'])}]"
        target = TARGET_OF.get(name)
        tgt = f"{targets[target]:.2f}" if target else ""
        lines.append(
            f"{label:55} {ratio:>19} {tgt:>6} {_range(row['seconds']):>23} "
            f"{_num(row['peak_rss_mb']['max'], '{:,.0f}'):>11} "
            f"{_num(row.get('cpu_ratio')):>9}{'*' if name in CPU_OF_CALL else ''}"
        )
    lines.append(
        "  ratio: wall seconds over the limit's, per repetition; CPU ratio: user+sys CPU over "
        "the limit's (less sensitive to other processes; * = CPU of the whole dg.materialize call)"
    )
    for name in ("ours_bare", "ours_history"):
        phases = rows.get(name, {}).get("phase_seconds")
        if phases:
            text = ", ".join(f"{k} {v:.2f}" for k, v in phases.items())
            lines.append(f"  load_export phases, {name} (median s): {text}")
    for name in ("peer_pandas", "peer_dlt"):
        laps = rows.get(name, {}).get("laps")
        if laps:
            text = ", ".join(f"{k} {v:.2f}" for k, v in laps.items())
            lines.append(f"  {name} stages (median s): {text}")
    return lines


def polling_table(poll: dict[str, Any]) -> list[str]:
    lines = [
        "Polling one Extralt run (create + polls + export download; emulated clock, exact)",
        f"{'':40} {'run':>6} {'requests':>9} {'busiest min':>12} {'steady/min':>11} "
        f"{'runs in 120/min':>16} {'notice s (exact)':>17} {'notice s mean [min-max]':>24}",
    ]
    for data in poll["schedules"].values():
        for label, run in data["runs"].items():
            sweep = run["sweep_latency_seconds"]
            lines.append(
                f"{data['label']:40} {label:>6} {run['requests']['median']:>9} "
                f"{run['busiest_minute_requests']:>12} {run['steady_requests_per_minute']:>11.0f} "
                f"{run['concurrent_runs_within_budget']:>16.0f} "
                f"{run['latency_seconds']['median']:>17.2f} "
                f"{sweep['mean']:>10.2f} [{sweep['min']:.2f}-{sweep['max']:.2f}]"
            )
    return lines


def overhead_table(ov: dict[str, Any]) -> list[str]:
    labels = {
        "bare_script": "bare script: client calls + warehouse.load_export",
        "dg_materialize": "dg.materialize, both assets, in-process",
        "dagster_cli": "dagster asset materialize (CLI, multiprocess)",
    }
    lines = [
        f"Dagster overhead, one source of {ov['captures']} captures, end to end "
        "(fast polls in both)",
        f"{'':50} {'process s [min-max]':>22} {'work s [min-max]':>22} {'peak RSS MB':>11}",
    ]
    for name, label in labels.items():
        row = ov[name]
        lines.append(
            f"{label:50} {_range(row['process_seconds']):>22} "
            f"{_range(row['work_seconds']):>22} {_num(row['peak_rss_mb']['max'], '{:,.0f}'):>11}"
        )
    lines.append(
        f"  CLI minus bare script: {ov['dagster_overhead_seconds']:.2f} s "
        f"({ov['dagster_overhead_ratio']:.1f}x); dg.materialize minus bare work: "
        f"{ov['in_process_overhead_seconds']:.2f} s"
    )
    return lines


def shapes_table(results: dict[str, Any]) -> list[str]:
    """The captures step against the two-table floor, per catalogue shape, at the largest size."""
    sized = [(n, size) for n, size in _shape_sizes(results)]
    if not sized:
        return []
    lines = [
        "Catalogue shapes: the captures step against the two-table floor (curl, then a bare "
        "CTAS of history and one of its flat offers), same repetition",
        f"  {'shape':10} {'captures':>9} {'offers':>11} {'floor s':>8} {'step s':>8} "
        f"{'step/floor':>10} {'max':>6} {'bare/floor':>10} {'step RSS MB':>11}",
    ]
    for name, size in sized:
        rows = size["rows"]
        floor, step, bare = (
            rows.get("limit_two_tables"),
            rows.get("ours_step"),
            rows.get("ours_bare"),
        )
        if not floor or not step:
            lines.append(f"  {name:10} not measured: {size.get('errors')}")
            continue
        lines.append(
            f"  {name:10} {size['captures']:>9,} {floor.get('offers') or 0:>11,} "
            f"{floor['seconds']['median']:>8.2f} {step['seconds']['median']:>8.2f} "
            f"{_num(step.get('ratio_two_tables')):>10} {_num(step.get('ratio_two_tables_max')):>6} "
            f"{_num((bare or {}).get('ratio_two_tables')):>10} "
            f"{step['peak_rss_mb']['max'] or 0:>11,.0f}"
        )
    return lines


def _shape_sizes(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    load = results.get("load", {})
    out = []
    if load:
        biggest = max(load.values(), key=lambda s: s["captures"])
        if "limit_two_tables" in biggest["rows"]:
            out.append(("emulator", biggest))
    for name, sizes in results.get("shapes", {}).items():
        out.extend((name, size) for size in sizes.values())
    return out


def growth_table(g: dict[str, Any]) -> list[str]:
    lines = [
        f"History growth: {g['products']:,} products loaded again and again, one run per load; "
        "queries on a read-only connection, median of 5 after a warm-up",
        f"  {'loads':>5} {'history':>9} {'load s':>7} {'last 3':>7} {'products scan ms':>16} "
        f"{'lookup ms':>9} {'offers lookup ms':>16} {'offers scan ms':>14} {'file GB':>7}",
    ]
    for n, at in sorted(g["at"].items(), key=lambda kv: int(kv[0])):
        lines.append(
            f"  {n:>5} {at['history_rows']:>9,} {at['load_seconds']:>7.2f} "
            f"{at['recent_load_seconds']:>7.2f} {at['products_scan']['seconds'] * 1000:>16.1f} "
            f"{at['product_lookup']['seconds'] * 1000:>9.1f} "
            f"{at['offers_lookup']['seconds'] * 1000:>16.1f} "
            f"{at['offers_scan']['seconds'] * 1000:>14.1f} {at['file_bytes'] / 1e9:>7.2f}"
        )
    return lines


def verdict_lines(results: dict[str, Any]) -> list[str]:
    lines = ["Targets (set for 1M captures; judged on the largest size measured)"]
    for v in results.get("verdicts", []):
        value = "-" if v["value"] is None else f"{v['value']:.2f}"
        mark = "met" if v["met"] else "MISSED"
        lines.append(
            f"  {v['target']:22} {v['size']:>5}: {value:>8} vs {v['limit']:g}  {mark:7} {v['what']}"
        )
    return lines


def render(results: dict[str, Any]) -> str:
    out: list[str] = []
    m = results["machine"]
    out.append(
        f"{results['mode']} run, {results['repeat']} repetitions, medians [min-max]; "
        f"{m['nproc']} cores ({m['cpu_model']}); DuckDB {m.get('versions', {}).get('duckdb')}; "
        f"load average {_load(m.get('loadavg_start'))} "
        f"at start, {_load(m.get('loadavg_end'))} at end; "
        f"{results.get('bench_seconds', 0):.0f} s in all"
    )
    out.append(
        "Ratios are against the limit measured in the same repetition: curl of the export "
        "plus the faster bare DuckDB copy."
    )
    for size in results.get("load", {}).values():
        out.append("")
        out.extend(load_table(size, results["targets"]))
    shapes = shapes_table(results)
    if shapes:
        out.append("")
        out.extend(shapes)
    lakes = targets.table(results)
    if lakes:
        out.append("")
        out.extend(lakes)
    if "growth" in results:
        out.append("")
        out.extend(growth_table(results["growth"]))
    if "polling" in results:
        out.append("")
        out.extend(polling_table(results["polling"]))
    if "overhead" in results:
        out.append("")
        out.extend(overhead_table(results["overhead"]))
    out.append("")
    out.extend(verdict_lines(results))
    return "\n".join(out)


def _load(value: Any) -> str:
    if not value:
        return "?"
    return "/".join(f"{x:.1f}" for x in value)


def render_doc(results: dict[str, Any]) -> str:
    m = results["machine"]
    v = m["versions"]
    machine = [
        f"- Generated {results['generated_at']} by `make bench` ({results['mode']} run, "
        f"{results['repeat']} repetitions, {results.get('bench_seconds', 0) / 60:.0f} min).",
        f"- `nproc`: {m['nproc']}; CPU: {m['cpu_model']}; kernel {m['kernel']}.",
        f"- Tree: commit {m.get('git_head') or '?'} (plus uncommitted work), `warehouse/` "
        f"sha256 {m.get('warehouse_sha256') or '?'}.",
        f"- Python {m['python']}, DuckDB {v.get('duckdb')}, Dagster {v.get('dagster')} "
        f"(dagster-duckdb {v.get('dagster-duckdb')}), pyarrow {v.get('pyarrow')}, "
        f"httpx {v.get('httpx')}, pandas {v.get('pandas')}, dlt {v.get('dlt')}, "
        f"dagster-duckdb-pandas {v.get('dagster-duckdb-pandas')}; {m.get('curl') or 'no curl'}.",
        f"- Load average {_load(m.get('loadavg_start'))} at the start and "
        f"{_load(m.get('loadavg_end'))} at the end (1/5/15 min): the machine was shared.",
        "",
        "`free -h` at the start:",
        "",
        "```text",
        m["free_h"],
        "```",
        "",
        "```text",
        render(results),
        "```",
    ]
    return "\n".join(machine)
