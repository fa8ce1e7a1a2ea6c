"""The captures asset's freshness policy, derived from the source's cron (its longest interval
plus the crawl's margin, the poll timeout), or set by `freshness:`."""

from datetime import UTC, datetime, timedelta

import pytest

from extralt_dagster import SourcesFileError, load_extralt_definitions
from extralt_dagster.freshness import cron_ticks, freshness_policy, longest_interval
from extralt_dagster.naming import captures_asset_key, run_asset_key

JAN = datetime(2026, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)


@pytest.mark.parametrize(
    ("cron", "timezone", "longest"),
    [
        ("0 3 * * *", "UTC", D),  # nightly
        ("0 4 * * 1", "UTC", 7 * D),  # Mondays
        ("0 4 * * 1-5", "UTC", 3 * D),  # weekdays: Friday to Monday
        ("*/15 9-17 * * mon-fri", "UTC", 2 * D + 15 * H + timedelta(minutes=15)),
        ("0 0 1 * *", "UTC", 31 * D),  # monthly: the longest month
        ("0 3 1,15 * 1", "UTC", 7 * D),  # cron's rule: the 1st, the 15th or a Monday
        ("@yearly", "UTC", 365 * D),
        ("30 3 * * *", "Europe/Berlin", 25 * H),  # the night clocks go back
        ("* * * * *", "UTC", timedelta(minutes=1)),
    ],
)
def test_the_longest_interval_of_a_cron(cron, timezone, longest):
    assert longest_interval(cron, timezone, JAN) == longest


def test_ticks_are_in_the_schedules_time_zone():
    ticks = cron_ticks("30 3 * * *", "Europe/Berlin", JAN, 2)
    assert [t.astimezone(UTC).strftime("%F %H:%M") for t in ticks] == [
        "2026-01-01 02:30",
        "2026-01-02 02:30",
    ]


def test_the_policy_is_the_longest_interval_plus_the_crawl_margin_or_the_setting():
    nightly = freshness_policy("0 3 * * *", "UTC", None, start=JAN)
    assert (nightly.fail_window.to_timedelta(), nightly.warn_window.to_timedelta()) == (
        D + 6 * H,
        D + 3 * H,
    )
    two_hours = freshness_policy("0 3 * * *", "UTC", "auto", crawl_margin=2 * H, start=JAN)
    assert two_hours.fail_window.to_timedelta() == D + 2 * H
    assert freshness_policy("0 3 * * *", "UTC", "off") is None
    assert freshness_policy(None, "UTC", None) is None  # no schedule: no expectation
    set_by_hand = freshness_policy(None, "UTC", "90m")
    assert set_by_hand.fail_window.to_timedelta() == timedelta(minutes=90)


def test_sources_file_policies(tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text(
        "sources:\n"
        "  - {name: shoes, robot_id: rbt_shoes, cron: '0 3 * * *', poll_timeout_seconds: 3600}\n"
        "  - {name: books, robot_id: rbt_books, cron: '0 4 * * 1', freshness: 'off'}\n"
        "  - {name: toys, robot_id: rbt_toys, freshness: 2 days}\n"
        "  - {name: tea, robot_id: rbt_tea}\n"
    )
    defs = load_extralt_definitions(path, duckdb_path=str(tmp_path / "w.duckdb"))
    specs = {s.key: s for s in defs.resolve_all_asset_specs()}
    window = {
        n: p and p.fail_window.to_timedelta()
        for n in ("shoes", "books", "toys", "tea")
        for p in [specs[captures_asset_key(n)].freshness_policy]
    }
    assert window == {"shoes": D + H, "books": None, "toys": 2 * D, "tea": None}
    assert specs[run_asset_key("shoes")].freshness_policy is None


def test_a_bad_freshness_names_the_source_and_the_field(tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text("sources:\n  - {name: shoes, robot_id: rbt_shoes, freshness: soon}\n")
    with pytest.raises(SourcesFileError, match=r"source 'shoes' \(sources\[0\]\), field freshness"):
        load_extralt_definitions(path, duckdb_path=str(tmp_path / "w.duckdb"))
