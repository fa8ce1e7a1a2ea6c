"""The read-only HTML page of a run, `GET /runs/<id>`: what the dashboard link in a log opens."""

from datetime import UTC, datetime
from html import escape
from typing import Any

from .runs import LIVE

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">{refresh}<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:48rem}}
th{{text-align:left;padding-right:1.5rem;color:#555;font-weight:normal}}td,th{{padding:.2rem 0}}
</style></head><body>
<h1>{title}</h1>
{body}
<p><small>The local Extralt emulator: a read-only view of its state, on its own clock
(emulated UTC times).</small></p>
</body></html>
"""


def run_html(doc: dict[str, Any]) -> str:
    """A run document as a small HTML page; every value from the state is escaped. A live run's
    page refreshes itself every 5 s."""
    budget = doc.get("budget")
    rows: list[tuple[str, Any]] = [
        ("Run", doc["_id"]),
        ("Status", doc["status"]),
        ("Robot", f"{doc['robotId']} ({doc['robotName']}, {doc['host']})"),
        ("Extracted", f"{doc['extracted']:,} captures"),
        ("In queue", f"{doc['inQueue']:,} URLs"),
        ("Budget", "none (the robot's whole catalogue)" if budget is None else f"{budget:,}"),
        ("Credits used", f"{doc['creditsUsed']:,}"),
        ("Created", _when(doc.get("createdAt"))),
        ("Started", _when(doc.get("startedAt"))),
        ("Finished", _when(doc.get("finishedAt"))),
        ("Duration", f"{doc['duration'] / 1000:,.1f} s"),
    ]
    for label, key in (
        ("Restarted from", "restartedFrom"),
        ("Error", "errorMessage"),
        ("Stop reason", "stopReason"),
    ):
        if doc.get(key):
            rows.append((label, doc[key]))
    table = "\n".join(
        f"<tr><th>{escape(label)}</th><td>{escape(str(value))}</td></tr>" for label, value in rows
    )
    return _PAGE.format(
        title=escape(f"Extralt run {doc['_id']}: {doc['status']}"),
        refresh='<meta http-equiv="refresh" content="5">' if doc["status"] in LIVE else "",
        body=f"<table>\n{table}\n</table>",
    )


def unknown_run_html(run_id: str) -> str:
    body = (
        f"<p>This emulator has no run <code>{escape(run_id)}</code>. Its runs live in memory "
        "only: an emulator that was restarted has forgotten the runs of the one before.</p>"
    )
    return _PAGE.format(title="Extralt run not found", refresh="", body=body)


def _when(ms: Any) -> str:
    if not isinstance(ms, int | float):
        return "not yet"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
