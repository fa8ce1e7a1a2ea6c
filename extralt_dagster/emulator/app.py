"""The emulator's routes: the Extralt API, the admin endpoints tests and the CLI use, and the
read-only run page. A Starlette app of module-level handlers; each reaches the emulator through
`request.app.state` (`emulator`, its public Python API; `injector`; `exports`)."""

import json
import os
from collections import Counter
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .cursors import decode_cursor, encode_cursor
from .datagen import read_captures
from .errors import ApiError, error_type
from .exports import MEDIA_TYPES, ExportCache, stream_export
from .faults import FaultInjector
from .gate import ADMIN_PREFIX, RUN_PAGE_PREFIX
from .run_page import run_html, unknown_run_html

API_PREFIX = "/v0/extract"


def build_app(emulator: Any, *, injector: FaultInjector, exports: ExportCache) -> Starlette:
    """The routes of `emulator` (an `Emulator`: only its public API is used)."""
    app = Starlette(
        routes=ROUTES,
        exception_handlers={ApiError: _on_api_error, HTTPException: _on_http_error},
    )
    app.state.emulator = emulator
    app.state.injector = injector
    app.state.exports = exports
    return app


def _emulator(request: Request) -> Any:
    return request.app.state.emulator


# --- The API ------------------------------------------------------------------------------


async def create_run(request: Request) -> Response:
    body = await _json_object(request, required=True)
    robot_id = body.get("robot_id")
    if not isinstance(robot_id, str) or not robot_id.strip():
        raise ApiError.of(400, "robot_id is required and must be a non-empty string.")
    start_urls = _start_urls(body)
    budget = _opt_budget(body)
    auto_enrich = body.get("auto_enrich")
    if auto_enrich is not None and not isinstance(auto_enrich, bool):
        raise ApiError.of(400, "auto_enrich must be a boolean.")
    emu = _emulator(request)
    run_id = emu.state.create_run(
        robot_id,
        start_urls=start_urls,
        budget=budget,
        auto_enrich=bool(auto_enrich),
        origin="api",
        **emu.faults.run_marks(robot_id),
    )
    return JSONResponse({"id": run_id}, status_code=202)


async def list_runs(request: Request) -> Response:
    emu = _emulator(request)
    most = emu.runs_page_size
    rows, cursor = emu.state.list_docs(
        limit=_int_param(request, "limit", min(20, most), most),
        cursor=request.query_params.get("cursor") or None,
        robot_id=request.query_params.get("robot_id") or None,
        status=request.query_params.get("status") or None,
        oldest_first=emu.runs_order == "oldest",
    )
    return JSONResponse({"rows": rows, "nextCursor": cursor})


async def get_run(request: Request) -> Response:
    return JSONResponse(_emulator(request).state.run_doc(request.path_params["run_id"]))


async def stop_run(request: Request) -> Response:
    _emulator(request).state.stop(request.path_params["run_id"], by="api")
    return Response(status_code=204)


async def restart_run(request: Request) -> Response:
    body = await _json_object(request, required=False)
    emu = _emulator(request)
    run_id = request.path_params["run_id"]
    try:
        marks = emu.faults.run_marks(emu.state.view(run_id).robot_id)
    except KeyError:
        marks = {}  # restart answers 404
    new_id = emu.state.restart(run_id, budget=_opt_budget(body), by="api", **marks)
    return JSONResponse({"id": new_id}, status_code=202)


async def list_captures(request: Request) -> Response:
    run_id = _required_param(request, "run_id")
    limit = _int_param(request, "limit", 100, 1000)
    cursor = request.query_params.get("cursor")
    offset = 0
    if cursor:
        data = decode_cursor(cursor, "captures")
        if data.get("run") != run_id or not isinstance(data.get("offset"), int):
            raise ApiError.of(400, f"Invalid cursor {cursor!r} for run {run_id}.")
        offset = data["offset"]
    emu = _emulator(request)
    spec = emu.state.export_spec(run_id)
    stop = min(spec.count, offset + limit)
    faults = emu.faults
    rows = await run_in_threadpool(
        read_captures,
        **spec.capture_arguments(),
        start=offset,
        stop=stop,
        seed=emu.data_seed,
        catalogue=emu.catalogue,
        extra_columns=faults.export_extra_columns,
        drop_columns=tuple(faults.export_drop_columns),
    )
    nxt = encode_cursor("captures", run=run_id, offset=stop) if stop < spec.count else None
    return JSONResponse({"rows": rows, "nextCursor": nxt})


async def export_captures(request: Request) -> Response:
    run_id = _required_param(request, "run_id")
    fmt = request.query_params.get("format") or "parquet"
    if fmt not in MEDIA_TYPES:
        raise ApiError.of(400, f"format must be parquet or jsonl, got {fmt!r}.")
    state = _emulator(request).state
    spec = state.export_spec(run_id)
    # One consistent view for this body; shape faults may target the run's robot.
    injector: FaultInjector = request.app.state.injector
    faults = injector.for_export(state.view(run_id).robot_id)
    exports: ExportCache = request.app.state.exports
    handle = await run_in_threadpool(exports.open, spec, fmt, faults.export_shape())
    size = os.fstat(handle.fileno()).st_size
    filename = faults.content_disposition_filename
    if filename is None:
        filename = f"{run_id}.{fmt}"
    headers = {"content-disposition": f'attachment; filename="{filename}"'} if filename else {}
    return StreamingResponse(
        stream_export(handle, size, faults), media_type=MEDIA_TYPES[fmt], headers=headers
    )


async def run_page(request: Request) -> Response:
    run_id = request.path_params["run_id"]
    try:
        doc = _emulator(request).state.run_doc(run_id)
    except ApiError:
        return HTMLResponse(unknown_run_html(run_id), status_code=404)
    return HTMLResponse(run_html(doc))


# --- Admin --------------------------------------------------------------------------------


async def admin_state(request: Request) -> Response:
    emu = _emulator(request)
    by_route = Counter(f"{r.method} {r.path}" for r in emu.requests)
    return JSONResponse(
        {
            "now": emu.clock.now(),
            "speed": emu.clock.speed,
            "credits": emu.credits,
            "runs": [asdict(v) for v in emu.runs.values()],
            "robots": [asdict(r) for r in emu.state.robots.values()],
            "requests": {"total": sum(by_route.values()), "by_route": dict(by_route)},
            "faults": emu.faults.to_dict(),
            "schedules": list(emu.schedules.values()),
            "run_counts": emu.run_counts(),
            "runs_page_size": emu.runs_page_size,
        }
    )


async def admin_list_schedules(request: Request) -> Response:
    return JSONResponse({"schedules": list(_emulator(request).schedules.values())})


#: The fields of `POST /_emulator/schedules`: `Emulator.set_schedule`'s arguments.
_SCHEDULE_FIELDS = frozenset(
    {"robot_id", "every_seconds", "budget", "runs", "failing", "fail_message", "first_in"}
)


async def admin_schedules(request: Request) -> Response:
    """Set a robot's schedule (`every_seconds` null removes it)."""
    body = await _json_object(request, required=True)
    robot_id = body.get("robot_id")
    if not isinstance(robot_id, str) or not robot_id:
        raise ApiError.of(400, "robot_id is required and must be a non-empty string.")
    unknown = sorted(set(body) - _SCHEDULE_FIELDS)
    if unknown:
        raise ApiError.of(400, f"Unknown schedule fields: {', '.join(unknown)}.")
    emu = _emulator(request)
    if body.get("every_seconds") is None:
        removed = emu.clear_schedule(robot_id)
        return JSONResponse({"robot_id": robot_id, "removed": removed})
    fields = {k: v for k, v in body.items() if k != "robot_id"}
    try:
        if not all(_is_number(fields.get(k, 1)) for k in ("every_seconds", "first_in")):
            raise ValueError("every_seconds and first_in must be numbers")
        failing = fields.pop("failing", [])
        if not isinstance(failing, list) or not all(isinstance(n, int) for n in failing):
            raise ValueError("failing must be a list of run numbers (1 = the first)")
        sched = emu.set_schedule(robot_id, failing=failing, **fields)
    except (TypeError, ValueError) as exc:
        raise ApiError.of(400, f"Bad schedule: {exc}") from None
    return JSONResponse(sched.to_dict(), status_code=201)


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


async def admin_faults(request: Request) -> Response:
    body = await _json_body(request, required=False) or {}
    if not isinstance(body, dict):
        raise ApiError.of(400, "The body must be a JSON object of Faults fields.")
    try:
        faults = _emulator(request).set_faults(**body)
    except (TypeError, ValueError) as exc:
        raise ApiError.of(400, str(exc)) from None
    return JSONResponse(faults.to_dict())


async def admin_clock(request: Request) -> Response:
    body = await _json_body(request, required=False) or {}
    clock = _emulator(request).clock
    try:
        if "speed" in body:
            clock.speed = float(body["speed"])
        if "advance" in body:
            clock.advance(float(body["advance"]))
    except (TypeError, ValueError) as exc:
        raise ApiError.of(400, str(exc)) from None
    return JSONResponse({"now": clock.now(), "speed": clock.speed})


async def admin_credits(request: Request) -> Response:
    body = await _json_body(request, required=True)
    if not isinstance(body, dict) or not all(
        isinstance(body.get(k, 0), int) for k in ("set", "add")
    ):
        raise ApiError.of(400, 'Send {"set": n} or {"add": n}.')
    emu = _emulator(request)
    if "set" in body:
        emu.set_credits(body["set"])
    if "add" in body:
        emu.set_credits(emu.credits + body["add"])
    return JSONResponse({"credits": emu.credits})


async def admin_list_robots(request: Request) -> Response:
    return JSONResponse({"robots": [asdict(r) for r in _emulator(request).robots.values()]})


async def admin_robots(request: Request) -> Response:
    body = await _json_body(request, required=True)
    try:
        robot = _emulator(request).add_robot(
            body["id"],
            body["host"],
            body.get("name"),
            int(body.get("catalogue_size", 1000)),
            country=body.get("country", "US"),
            currency=body.get("currency", "USD"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ApiError.of(400, f"Bad robot: {exc}") from None
    return JSONResponse(asdict(robot), status_code=201)


async def admin_run_action(request: Request) -> Response:
    run_id, action = request.path_params["run_id"], request.path_params["action"]
    body = await _json_body(request, required=False) or {}
    state = _emulator(request).state
    if action == "stop":
        state.stop(run_id, by="dashboard")
    elif action == "fail":
        state.fail(run_id, str(body.get("message") or "Robot crashed"))
    elif action == "finish":
        state.finish(run_id)
    elif action == "status":
        status = body.get("status")
        state.run_doc(run_id)  # 404 for unknown runs
        state.force_status(run_id, None if status is None else str(status))
    else:
        raise ApiError.of(404, f"Unknown run action {action!r}.")
    return JSONResponse(asdict(state.view(run_id)))


# --- Errors -------------------------------------------------------------------------------


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse({"error": exc.error, "message": exc.message}, status_code=exc.status)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    return JSONResponse(
        {"error": error_type(status), "message": str(exc.detail)},
        status_code=status,
        headers=exc.headers,
    )


# --- Reading requests ---------------------------------------------------------------------


async def _json_body(request: Request, *, required: bool) -> Any:
    raw = await request.body()
    if not raw.strip():
        if required:
            raise ApiError.of(400, "A JSON body is required.")
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError.of(400, "Malformed JSON body.") from None


async def _json_object(request: Request, *, required: bool) -> dict[str, Any]:
    """The body as a JSON object ({} for an optional body that is absent)."""
    body = await _json_body(request, required=required)
    if body is None and not required:
        return {}
    if not isinstance(body, dict):
        raise ApiError.of(400, "The body must be a JSON object.")
    return body


def _start_urls(body: dict[str, Any]) -> list[str] | None:
    start_urls = body.get("start_urls")
    if start_urls is None:
        return None
    if not isinstance(start_urls, list) or not all(isinstance(u, str) for u in start_urls):
        raise ApiError.of(400, "start_urls must be a list of strings.")
    if not start_urls:
        raise ApiError.of(422, "start_urls must not be empty; omit it for the defaults.")
    for url in start_urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ApiError.of(422, f"start_urls must be absolute http(s) URLs, got {url!r}.")
    return start_urls


def _opt_budget(body: dict[str, Any]) -> int | None:
    budget = body.get("budget")
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise ApiError.of(400, f"budget must be an integer, got {type(budget).__name__}.")
    if budget <= 0:
        raise ApiError.of(422, f"budget must be a positive number of captures, got {budget}.")
    return budget


def _int_param(request: Request, name: str, default: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError.of(400, f"{name} must be an integer, got {raw!r}.") from None
    if value < 1:
        raise ApiError.of(422, f"{name} must be >= 1, got {value}.")
    return min(value, maximum)


def _required_param(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise ApiError.of(400, f"The query parameter {name} is required.")
    return value


_API, _ADMIN = API_PREFIX, ADMIN_PREFIX
ROUTES = [
    Route(f"{_API}/runs", create_run, methods=["POST"]),
    Route(f"{_API}/runs", list_runs, methods=["GET"]),
    Route(f"{_API}/runs/{{run_id}}", get_run, methods=["GET"]),
    Route(f"{_API}/runs/{{run_id}}/stop", stop_run, methods=["POST"]),
    Route(f"{_API}/runs/{{run_id}}/restart", restart_run, methods=["POST"]),
    Route(f"{_API}/captures", list_captures, methods=["GET"]),
    Route(f"{_API}/captures/export", export_captures, methods=["GET"]),
    Route(f"{_ADMIN}/state", admin_state, methods=["GET"]),
    Route(f"{_ADMIN}/faults", admin_faults, methods=["POST"]),
    Route(f"{_ADMIN}/clock", admin_clock, methods=["POST"]),
    Route(f"{_ADMIN}/credits", admin_credits, methods=["POST"]),
    Route(f"{_ADMIN}/robots", admin_robots, methods=["POST"]),
    Route(f"{_ADMIN}/robots", admin_list_robots, methods=["GET"]),
    Route(f"{_ADMIN}/schedules", admin_schedules, methods=["POST"]),
    Route(f"{_ADMIN}/schedules", admin_list_schedules, methods=["GET"]),
    Route(f"{RUN_PAGE_PREFIX}{{run_id:path}}", run_page, methods=["GET"]),
    Route(f"{_ADMIN}/runs/{{run_id}}/{{action}}", admin_run_action, methods=["POST"]),
]
