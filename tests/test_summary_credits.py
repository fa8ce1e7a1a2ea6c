"""`extralt-dagster summary`'s credits of the current period beside each cap: the period a
source's `credit_limit` counts in (its time zone), else the calendar month; and the location's
cap (`location_credit_limit`) over all the file's sources."""

import io
import textwrap
from datetime import UTC, datetime

from extralt_dagster.cli import main
from extralt_dagster.emulator.datagen import write_captures
from extralt_dagster.sources import parse_sources
from extralt_dagster.summary import print_summary
from extralt_dagster.warehouse import RunRecord, Target, connect, load_export

SOURCES = """
defaults: {timezone: UTC}
location_credit_limit: {credits: 1000, per: month}
sources:
  - {name: shoes, robot_id: rbt_shoes, budget: 10, credit_limit: {credits: 80, per: week}}
  - {name: books, robot_id: rbt_books, budget: 10, timezone: Europe/Berlin}
"""
#: Wednesday 2026-12-09 12:00 UTC: the week began Monday the 7th, the month on the 1st.
NOW = datetime(2026, 12, 9, 12, tzinfo=UTC).timestamp()


def warehouse_with_runs(tmp_path):
    database = tmp_path / "wh.duckdb"
    runs = [  # (source, run, created, credits)
        ("shoes", "run_s_old", datetime(2026, 11, 30, 23, tzinfo=UTC), 20),  # last month
        ("shoes", "run_s_month", datetime(2026, 12, 2, tzinfo=UTC), 20),  # this month, last week
        ("shoes", "run_s_week", datetime(2026, 12, 8, tzinfo=UTC), 20),  # this week
        ("books", "run_b_berlin", datetime(2026, 11, 30, 23, 30, tzinfo=UTC), 16),  # Dec 1 Berlin
        ("books", "run_b_old", datetime(2026, 11, 30, 22, tzinfo=UTC), 8),  # Nov 30 in Berlin
    ]
    with connect(database) as con:
        for source, run_id, created, spent in runs:
            path = write_captures(tmp_path / f"{run_id}.parquet", run_id=run_id, count=spent // 2)
            run = RunRecord(run_id=run_id, created_at=created, extracted=spent // 2)
            load_export(con, path, target=Target(source), run=run)
    return database


def credit_rows(text: str) -> dict[str, list[str]]:
    section = text.split("Credits this period", 1)[1].split("\n\n", 1)[0]
    rows = [line.split() for line in section.splitlines()[4:]]
    return {row[0]: row[1:] for row in rows}


def test_the_summary_shows_each_period_beside_its_cap(tmp_path):
    database = warehouse_with_runs(tmp_path)
    out = io.StringIO()
    sources = parse_sources(textwrap.dedent(SOURCES), "sources.yaml")
    assert print_summary(database, out=out, sources=sources, now=NOW) == 0
    rows = credit_rows(out.getvalue())
    assert rows == {
        "shoes": ["week", "from", "2026-12-07", "(UTC)", "20", "80", "25%"],
        "books": ["month", "from", "2026-12-01", "(Europe/Berlin)", "16", "none"],
        # The location's month, in defaults' time zone (UTC): books' Berlin run is not in it.
        "(location)": ["month", "from", "2026-12-01", "(UTC)", "40", "1,000", "4%"],
    }


def test_without_sources_periods_are_utc_months_and_no_cap(tmp_path, capsys):
    database = warehouse_with_runs(tmp_path)
    assert main(["summary", str(database)]) == 0
    rows = credit_rows(capsys.readouterr().out)
    # Today's month (the runs above are in December 2026: this test's clock is the wall's).
    month = datetime.now(UTC).strftime("%Y-%m-01")
    assert {name: row[:4] for name, row in rows.items()} == {
        name: ["month", "from", month, "(UTC)"] for name in ("books", "shoes")
    }
    assert all(row[-1] == "none" for row in rows.values())


def test_a_bad_sources_file_is_named(tmp_path, capsys):
    database = warehouse_with_runs(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [{name: shoes}]\n")
    assert main(["summary", str(database), "--sources", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "robot_id" in err
