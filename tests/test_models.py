"""Input checks and the run model: pure functions, no server."""

import os
import re
import subprocess
import sys

import pytest

from extralt_dagster import (
    ExtraltAuthError,
    ExtraltClient,
    ExtraltRun,
    ExtraltUnknownStatusError,
    ExtraltValidationError,
    RunStatus,
)
from extralt_dagster.api.exports import safe_export_filename
from extralt_dagster.api.models import (
    ExportFormat,
    validate_budget,
    validate_start_urls,
)
from extralt_dagster.api.transport import TokenBucket, _parse_retry_after


def test_run_status_covers_the_seven_statuses():
    assert {s.value for s in RunStatus} == {
        "pending",
        "starting",
        "running",
        "restarting",
        "completed",
        "failed",
        "stopped",
    }
    assert {s for s in RunStatus if s.is_terminal} == {
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.STOPPED,
    }


def test_unknown_status_is_an_error_not_done():
    with pytest.raises(ExtraltUnknownStatusError, match="'paused'") as info:
        ExtraltRun.from_api({"_id": "run_1", "status": "paused"})
    assert info.value.run_id == "run_1"


def test_run_document_parses_camel_case_and_keeps_extra_fields():
    run = ExtraltRun.from_api(
        {
            "_id": "run_1",
            "status": "completed",
            "extracted": 12,
            "inQueue": 0,
            "robotId": "rbt_1",
            "robotName": "Shoes",
            "budget": 20,
            "createdAt": 1_700_000_000_000,
            "startedAt": 1_700_000_001_000,
            "duration": 2500,
            "somethingNew": {"x": 1},
        }
    )
    assert (run.id, run.status, run.extracted, run.robot_id) == (
        "run_1",
        RunStatus.COMPLETED,
        12,
        "rbt_1",
    )
    assert run.duration == 2.5
    assert run.started_at is not None and run.started_at.timestamp() == 1_700_000_001
    assert run.credits_spent == 24
    assert run.raw["somethingNew"] == {"x": 1}


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("ftp://x.example/a", "start_urls[0]"),
        ("/relative", "start_urls[0]"),
        ("https://", "start_urls[0]"),
    ],
)
def test_start_urls_must_be_absolute_http(value, field):
    with pytest.raises(ExtraltValidationError, match=re.escape(field)):
        validate_start_urls([value])


def test_start_urls_rejects_a_bare_string_and_an_empty_list():
    with pytest.raises(ExtraltValidationError, match="start_urls"):
        validate_start_urls("https://x.example")
    with pytest.raises(ExtraltValidationError, match="omit it"):
        validate_start_urls([])


@pytest.mark.parametrize("value", [0, -5, 1.5, True, "10"])
def test_budget_must_be_a_positive_int(value):
    with pytest.raises(ExtraltValidationError, match="budget"):
        validate_budget(value)


def test_retry_after_seconds_and_http_date():
    assert _parse_retry_after("7") == 7.0
    assert _parse_retry_after("0.5") == 0.5
    assert _parse_retry_after(None) is None
    assert _parse_retry_after("garbage") is None
    assert _parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


def test_token_bucket_allows_a_burst_then_paces():
    now = [0.0]
    waits: list[float] = []
    bucket = TokenBucket(120, 30, clock=lambda: now[0], sleep=waits.append)
    for _ in range(30):
        bucket.acquire()
    assert waits == []
    bucket.acquire()
    assert waits == [pytest.approx(0.5)]  # 120/min = one token per 0.5 s


def test_export_filename_never_comes_from_outside_the_run_id():
    assert safe_export_filename("run_abc", ExportFormat.PARQUET) == "run_abc.parquet"
    for hostile in ("../../etc/passwd", "/abs/x", "..", "a/b"):
        name = safe_export_filename(hostile, ExportFormat.PARQUET)
        assert "/" not in name and ".." not in name and name.endswith(".parquet")


def test_the_fallback_export_name_is_the_same_in_every_process():
    """Python salts str hashes per process (PYTHONHASHSEED): the name must not depend on it."""
    script = (
        "from extralt_dagster.api.exports import safe_export_filename\n"
        "from extralt_dagster.api.models import ExportFormat\n"
        "print(safe_export_filename('../run 1', ExportFormat.JSONL))\n"
    )
    names = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert names == {safe_export_filename("../run 1", ExportFormat.JSONL)}
    (name,) = names
    assert re.fullmatch(r"export-[0-9a-f]{16}\.jsonl", name)


def test_client_repr_hides_the_key_and_a_blank_key_is_refused_naming_the_variable():
    client = ExtraltClient("secret-key-123", "http://127.0.0.1:9")
    assert repr(client) == "ExtraltClient(base_url='http://127.0.0.1:9', api_key='***')"
    client.close()
    for blank in ("", "   "):
        with pytest.raises(ExtraltAuthError) as info:
            ExtraltClient(blank, "http://127.0.0.1:9")
        assert str(info.value) == (
            "No Extralt API key given. Set the EXTRALT_API_KEY environment variable "
            "(or pass api_key) to the key from your Extralt dashboard."
        )


def test_the_error_tree_drawn_in_errors_py_is_the_class_tree():
    """The docstring's drawing is the documentation of what to catch: it must stay true."""
    import extralt_dagster
    from extralt_dagster.api import errors

    drawn: dict[str, str | None] = {}
    parents: list[str] = []  # the class at each depth of the drawing
    for line in errors.__doc__.splitlines():
        match = re.match(r"^ {4}([│ ]*)(?:[├└]── )?(Extralt\w+)", line)
        if not match:
            continue
        depth = len(match.group(1)) // 4 + ("──" in line)
        del parents[depth:]
        drawn[match.group(2)] = parents[-1] if parents else None
        parents.append(match.group(2))
    defined = {
        name: cls.__bases__[0].__name__ if cls is not errors.ExtraltError else None
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, errors.ExtraltError)
    }
    assert drawn == defined
    assert set(defined) <= set(extralt_dagster.__all__)  # every class importable from the top
