"""`benchmarks/` stays runnable: a 1,000-capture dry run of `make bench`, with no timing
assertion (timings belong to `make bench`, never to `make test`)."""

import json

from benchmarks import bench, polling


def test_load_path_dry_run_measures_every_row(tmp_path):
    out = tmp_path / "results.json"
    argv = ["--sizes", "1000", "--repeat", "1", "--no-peers", "--no-overhead", "--no-polling"]
    argv += ["--shapes", "fashion", "--growth", "1,2", "--growth-products", "500"]
    argv += ["--targets", "file,ducklake"]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    assert bench.main(argv) == 0
    results = json.loads(out.read_text())
    rows = results["load"]["1k"]["rows"]
    assert results["load"]["1k"]["errors"] == {}
    assert rows["ours_step"]["rows"] == 1000
    assert rows["ours_step"]["variants"] > 1000
    for key in ("load_ratio_history_1k", "load_ratio_full_1k", "step_ratio_full_1k"):
        assert results[key] > 0
    assert results["peak_rss_mb_1k"] > 0
    assert rows["ours_step"]["ratio_two_tables"] > 0 and rows["limit_two_tables"]["offers"] > 0
    # The fashion shape: the same rows, eight times the offers of the emulator's own shape.
    fashion = results["shapes"]["fashion"]["1k"]["rows"]
    assert fashion["ours_step"]["rows"] == 1000 and fashion["ours_step"]["ratio_two_tables"] > 0
    assert fashion["limit_two_tables"]["offers"] > 6 * rows["limit_two_tables"]["offers"]
    after = results["growth"]["at"]["2"]
    assert after["history_rows"] == 1000 and after["product_lookup"]["rows"] == 1
    assert after["offers_lookup"]["rows"] >= 1 and after["products_scan"]["rows"] == 1
    # The warehouse targets, each against its own floor (issue 17).
    targets = results["warehouse_targets"]["1k"]["targets"]
    assert set(targets) == {"file", "ducklake"}
    for row in targets.values():
        assert row["ratio"] > 0 and row["floor_seconds"]["median"] > 0 and row["duckdb"]
    judged = {(v["target"], v["size"]) for v in results["verdicts"]}
    assert {("growth product_lookup ms", "2 loads"), ("two-table floor", "fashion 1k")} <= judged
    assert not (tmp_path / "cache" / "work").exists()  # scratch is cleaned up


def test_polling_counts_requests_of_a_simulated_run():
    result = polling.measure({"30s": 30.0}, repeat=1, sweep_points=2)
    run = result["schedules"]["adaptive"]["runs"]["30s"]
    assert run["run_seconds"] == 30.0
    # create + polls + export, every one counted by the emulator
    assert run["requests"]["median"] == 1 + run["breakdown"]["polls"] + 1
    assert 0 <= run["latency_seconds"]["median"] <= 10
