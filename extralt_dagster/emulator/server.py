"""The emulator's HTTP server: Starlette routes, a gate for auth/faults/rate limit, and uvicorn.

`Emulator` runs uvicorn in a background thread on 127.0.0.1 and exposes the state, the clock
and the faults to tests. Everything a client sees goes over real HTTP.
"""

import asyncio
import contextlib
import fnmatch
import hashlib
import hmac
import html
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .clock import EmulatorClock
from .cursors import decode_cursor, encode_cursor
from .datagen import ExportShape, read_captures, write_captures
from .faults import FaultInjector, Faults
from .runs import LIVE
from .state import ApiError, EmulatorState, ExportSpec, Robot, RunView

DEMO_API_KEY = "extralt-demo-key"
API_PREFIX = "/v0/extract"
ADMIN_PREFIX = "/_emulator"
RUN_PAGE_PREFIX = "/runs/"  # the dashboard links the client logs: `<base_url>/runs/<run id>`
CHUNK_SIZE = 1 << 20
MAX_RECORDED = 1_000_000  # requests kept in the log, so a long CLI session stays bounded
MEDIA_TYPES = {"parquet": "application/vnd.apache.parquet", "jsonl": "application/x-ndjson"}
ERROR_TYPES = {
    400: "BadRequest",
    401: "Unauthorized",
    402: "InsufficientCredits",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    422: "UnprocessableEntity",
    429: "TooManyRequests",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class EmulatorAbort(Exception):
    """Raised mid-body to drop the connection on purpose (the `export_cut_after_bytes` fault)."""


class _QuietAborts(logging.Filter):
    """uvicorn logs an app exception as an error; a deliberate cut is not one."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        for _ in range(10):  # follow causes and exception groups, but never around a cycle
            if exc is None:
                break
            if isinstance(exc, EmulatorAbort):
                return False
            inner = getattr(exc, "exceptions", None)  # an ExceptionGroup from a task group
            exc = inner[0] if inner else exc.__cause__ or exc.__context__
        return True


_quiet = _QuietAborts()
logging.getLogger("uvicorn.error").addFilter(_quiet)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    status: int  # 0 while no response has started
    at: float  # emulated epoch seconds when the request arrived
    user_agent: str = ""  # what the client says it is (never the key: no other header is kept)


@dataclass
class _Record:
    method: str
    path: str
    query: dict[str, str]
    at: float
    status: int = 0
    user_agent: str = ""


class _RateLimiter:
    """A token bucket per API key, on real monotonic time (the emulated clock may race ahead)."""

    def __init__(self, per_minute: float, burst: int) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("rate_limit needs per_minute > 0 and burst >= 1")
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float | None:
        """Take a token; None if granted, else the seconds until one is free."""
        with self._lock:
            now = time.monotonic()
            tokens, updated = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - updated) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return None
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


class _ExportCache:
    """Generated export files on disk, keyed by everything that shapes their bytes.

    Only the newest file per (run, format, columns) is kept; an older one still being streamed
    stays readable through its open handle after the unlink.
    """

    def __init__(self, directory: Path, seed: int) -> None:
        self.dir = directory
        self.seed = seed
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._latest: dict[tuple[str, str, str], Path] = {}

    def open(self, spec: ExportSpec, fmt: str, shape: ExportShape) -> BinaryIO:
        variant = shape.key()
        fields = [asdict(spec), fmt, variant, self.seed]
        key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
        path = self.dir / f"{spec.run_id}-{spec.count}-{key}.{fmt}"
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            if not path.exists():
                tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
                try:
                    write_captures(
                        tmp,
                        run_id=spec.data_key,
                        count=spec.count,
                        seed=self.seed,
                        host=spec.host,
                        format=fmt,
                        currency=spec.currency,
                        store=spec.store,
                        started_at=spec.started_at,
                        ended_at=spec.ended_at,
                        **shape.write_options(spec.count),
                    )
                    os.replace(tmp, path)
                finally:
                    tmp.unlink(missing_ok=True)
            handle = path.open("rb")
        with self._lock:
            slot = (spec.run_id, fmt, variant)
            old = self._latest.get(slot)
            self._latest[slot] = path
            if old is not None and old != path:
                old.unlink(missing_ok=True)
        return handle


class Emulator:
    """A local, stateful Extralt API on real HTTP. Use as a context manager, or start()/stop().

    Time is `clock` (emulated, `speed` x real time, plus `clock.advance()`); runs move through
    their lifecycle whenever anything reads them. Faults are switched on with `set_faults()`.
    Run ids are random, unique per emulator, unless `seed` is given: then they repeat from one
    emulator to the next. `GET /runs/<id>` is a read-only HTML page of the run, for people.
    """

    def __init__(
        self,
        api_key: str = DEMO_API_KEY,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 1.0,
        seed: int | None = None,
        concurrency_limit: int | None = 1,
        credits: int = 10_000_000,
        rate_limit: tuple[float, int] | None = (120, 30),
        capture_rate: float = 20.0,
        starting_seconds: float = 2.0,
        restarting_seconds: float = 1.0,
        restart_keeps_id: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        start_time: float | None = None,
        robots: list[Robot] | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must be a non-empty string")
        self.api_key = api_key
        self.host = host
        # No seed: random run ids, unique per process (a restarted emulator must never hand out
        # an id a warehouse already holds). A seed repeats ids, for benchmarks and replays.
        # Captures, faults' error_rate and the export cache are seeded either way (0 by default):
        # a run's data depends only on its id and this.
        self.seed = seed
        self.data_seed = 0 if seed is None else seed
        self.clock = EmulatorClock(speed, start=start_time)
        self.state = EmulatorState(
            self.clock,
            seed=seed,
            concurrency_limit=concurrency_limit,
            credits=credits,
            capture_rate=capture_rate,
            starting_seconds=starting_seconds,
            restarting_seconds=restarting_seconds,
            restart_keeps_id=restart_keeps_id,
            robots={r.id: r for r in robots} if robots else {},
        )
        self._injector = FaultInjector(seed=self.data_seed)
        self._limiter = _RateLimiter(*rate_limit) if rate_limit else None
        self._records: deque[_Record] = deque(maxlen=MAX_RECORDED)
        self._records_lock = threading.Lock()
        self._own_cache = cache_dir is None
        self._cache_dir = Path(cache_dir) if cache_dir else None
        self._cache: _ExportCache | None = None
        self._requested_port = port
        self._port: int | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.app = _build_app(self)

    # --- Lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> "Emulator":
        """Bind (port 0 picks a free port), serve in a background thread, wait until ready."""
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        if self._cache_dir is None:
            self._cache_dir = Path(tempfile.mkdtemp(prefix="extralt-emulator-"))
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        self._cache = _ExportCache(self._cache_dir, self.data_seed)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"extralt-emulator-{self._port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.ready.wait(0.05):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._server.should_exit = True
                self._thread.join(5)
                self._thread = None
                sock.close()
                raise RuntimeError(f"the Extralt emulator did not start on {self.host}")
        return self

    def stop(self) -> None:
        """Stop serving and remove the export cache (if the emulator made it)."""
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
        self._thread = None
        self._server = None
        if self._own_cache and self._cache_dir is not None:
            shutil.rmtree(self._cache_dir, ignore_errors=True)
            self._cache_dir = None

    def __enter__(self) -> "Emulator":
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self, stop: threading.Event) -> None:
        """Serve until `stop` is set (the CLI sets it on SIGINT/SIGTERM)."""
        if self._thread is None:
            self.start()
        while not stop.wait(0.5):
            if self._thread is None or not self._thread.is_alive():
                break
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("emulator not started")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def cache_dir(self) -> Path | None:
        return self._cache_dir

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not started"
        return f"Emulator({where}, api_key='***')"

    # --- Requests -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far (faulted, rejected and admin ones too), oldest first."""
        with self._records_lock:
            return [
                RecordedRequest(r.method, r.path, dict(r.query), r.status, r.at, r.user_agent)
                for r in self._records
            ]

    def count_requests(self, method: str | None = None, path: str | None = None) -> int:
        """How many requests match `method` and the fnmatch pattern `path`."""
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (path is None or fnmatch.fnmatchcase(r.path, path))
        )

    def clear_requests(self) -> None:
        with self._records_lock:
            self._records.clear()

    def _record(
        self, method: str, path: str, query: dict[str, str], user_agent: str = ""
    ) -> _Record:
        rec = _Record(method, path, query, self.clock.now(), user_agent=user_agent)
        with self._records_lock:
            self._records.append(rec)
        return rec

    # --- State --------------------------------------------------------------------------

    @property
    def runs(self) -> dict[str, RunView]:
        return self.state.views()

    def run(self, run_id: str) -> RunView:
        return self.state.view(run_id)

    @property
    def robots(self) -> dict[str, Robot]:
        return dict(self.state.robots)

    def add_robot(
        self,
        robot_id: str,
        host: str,
        name: str | None = None,
        catalogue_size: int = 1000,
        *,
        country: str = "US",
        currency: str = "USD",
    ) -> Robot:
        robot = Robot(
            robot_id, host, name or f"{host} ({country})", country, currency, catalogue_size
        )
        self.state.add_robot(robot)
        return robot

    @property
    def credits(self) -> int:
        return self.state.balance()

    def set_credits(self, credits: int) -> None:
        """Set the balance, e.g. low enough that a run runs out partway."""
        self.state.set_balance(credits)

    def stop_run_externally(self, run_id: str) -> None:
        """As if a person clicked Stop on the dashboard."""
        self.state.stop(run_id)

    def fail_run(self, run_id: str, message: str = "Robot crashed") -> None:
        self.state.fail(run_id, message)

    def finish_run(self, run_id: str) -> None:
        """Complete a live run now, with its full target (as far as credits allow)."""
        self.state.finish(run_id)

    def force_status(self, run_id: str, status: str | None) -> None:
        """Make GET report `status` (e.g. "paused", outside the seven); None undoes it."""
        self.state.force_status(run_id, status)

    # --- Faults -------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """The live faults; setting a field on it takes effect at once."""
        return self._injector.faults

    def set_faults(self, **fields: Any) -> Faults:
        """Replace all faults with `Faults(**fields)` (fields not named are off)."""
        faults = Faults.from_dict(fields)
        self._injector.replace(faults)
        return faults

    def clear_faults(self) -> None:
        self._injector.replace(Faults())

    # --- Used by the app ----------------------------------------------------------------

    def _authorized(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.api_key.encode()
        )

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but end early when the emulator stops, so shutdown never waits on a fault."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.05))

    def _export_file(self, spec: ExportSpec, fmt: str, faults: Faults) -> BinaryIO:
        assert self._cache is not None
        return self._cache.open(spec, fmt, faults.export_shape())

    def _admin_state(self) -> dict[str, Any]:
        by_route = Counter(f"{r.method} {r.path}" for r in self.requests)
        return {
            "now": self.clock.now(),
            "speed": self.clock.speed,
            "credits": self.credits,
            "runs": [asdict(v) for v in self.runs.values()],
            "robots": [asdict(r) for r in self.state.robots.values()],
            "requests": {"total": sum(by_route.values()), "by_route": dict(by_route)},
            "faults": self.faults.to_dict(),
        }


class _Server(uvicorn.Server):
    """uvicorn.Server that signals readiness through an Event instead of being polled."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


# --- The gate: recording, auth, faults, rate limit ----------------------------------------


class _Gate:
    """Pure ASGI middleware, so it sees the real response status, streamed bodies included."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], emu: Emulator):
        self.app = app
        self.emu = emu

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        emu = self.emu
        method, path = scope["method"], scope["path"]
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), True))
        agent = dict(scope.get("headers") or ()).get(b"user-agent", b"").decode("latin-1")
        rec = emu._record(method, path, query, agent)

        async def send_recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                rec.status = message["status"]
            await send(message)

        if method in ("GET", "HEAD") and path.startswith(RUN_PAGE_PREFIX):
            # A read-only page a person opens from a log link, in a browser that sends no key;
            # it shows nothing the key protects, and takes no faults.
            await self.app(scope, receive, send_recorded)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not emu._authorized(headers.get("authorization")):
            await _send_error(
                send_recorded,
                401,
                "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
            )
            return
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            await self.app(scope, receive, send_recorded)
            return

        fault = emu._injector.for_request(method, path)
        if fault.latency:
            # A slow server has the request, body and all, before it is slow: a create that
            # the client gives up on still starts its run.
            receive = await _buffered(receive)
            await emu._sleep(fault.latency)
        if fault.endless:
            await _send_endless(send_recorded, receive, emu)
            return
        if fault.wrong_body is not None:
            await _send_raw(send_recorded, emu.faults.wrong_body_status, fault.wrong_body)
            return
        if fault.status is not None:
            if fault.after_handling:
                await self.app(scope, receive, _discard)
            extra = _retry_after(fault.retry_after)
            await _send_error(send_recorded, fault.status, "Injected fault", extra)
            return
        if emu._limiter is not None:
            wait = emu._limiter.take(headers["authorization"].partition(" ")[2].strip())
            if wait is not None:
                await _send_error(
                    send_recorded,
                    429,
                    "Rate limit exceeded: about 120 requests per minute, bursts of 30.",
                    {"retry-after": str(max(1, math.ceil(wait)))},
                )
                return
        await self.app(scope, receive, send_recorded)


async def _buffered(receive: Receive) -> Receive:
    """Read the whole request body now; the app reads it later from the buffer."""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body"):
            break

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return replay


async def _discard(message: Message) -> None:
    """A send that drops the response, for faults that answer after doing the work."""


async def _send_raw(send: Send, status: int, body: str) -> None:
    data = body.encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


async def _send_endless(send: Send, receive: Receive, emu: Emulator) -> None:
    """A 200 whose body never ends (the `endless_body` fault): it trickles, or stalls, until the
    client hangs up or the emulator stops."""
    faults = emu.faults
    interval, size = faults.endless_interval_seconds, faults.endless_chunk_bytes
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.ensure_future(watch())
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"rows": [', "more_body": True})
        while not gone.is_set() and not emu._stopping.is_set():
            if interval is None:
                await asyncio.sleep(0.05)
                continue
            await send({"type": "http.response.body", "body": b" " * size, "more_body": True})
            await asyncio.sleep(interval)
    except OSError:
        pass  # the client hung up mid-send
    finally:
        watcher.cancel()


def _retry_after(seconds: float | None) -> dict[str, str]:
    return {} if seconds is None else {"retry-after": str(max(0, math.ceil(seconds)))}


async def _send_error(
    send: Send, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"error": ERROR_TYPES.get(status, "Error"), "message": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# --- Routes -------------------------------------------------------------------------------


def _error(status: int, message: str) -> ApiError:
    return ApiError(status, ERROR_TYPES.get(status, "Error"), message)


async def _json_body(request: Request, *, required: bool) -> Any:
    raw = await request.body()
    if not raw.strip():
        if required:
            raise _error(400, "A JSON body is required.")
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _error(400, "Malformed JSON body.") from None


def _opt_budget(body: dict[str, Any]) -> int | None:
    budget = body.get("budget")
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise _error(400, f"budget must be an integer, got {type(budget).__name__}.")
    if budget <= 0:
        raise _error(422, f"budget must be a positive number of captures, got {budget}.")
    return budget


def _int_param(request: Request, name: str, default: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _error(400, f"{name} must be an integer, got {raw!r}.") from None
    if value < 1:
        raise _error(422, f"{name} must be >= 1, got {value}.")
    return min(value, maximum)


def _required_param(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise _error(400, f"The query parameter {name} is required.")
    return value


def _build_app(emu: Emulator) -> Any:
    state = emu.state

    async def create_run(request: Request) -> Response:
        body = await _json_body(request, required=True)
        if not isinstance(body, dict):
            raise _error(400, "The body must be a JSON object.")
        robot_id = body.get("robot_id")
        if not isinstance(robot_id, str) or not robot_id.strip():
            raise _error(400, "robot_id is required and must be a non-empty string.")
        start_urls = body.get("start_urls")
        if start_urls is not None:
            if not isinstance(start_urls, list) or not all(isinstance(u, str) for u in start_urls):
                raise _error(400, "start_urls must be a list of strings.")
            if not start_urls:
                raise _error(422, "start_urls must not be empty; omit it for the defaults.")
            for url in start_urls:
                parts = urlsplit(url)
                if parts.scheme not in ("http", "https") or not parts.netloc:
                    raise _error(422, f"start_urls must be absolute http(s) URLs, got {url!r}.")
        budget = _opt_budget(body)
        auto_enrich = body.get("auto_enrich")
        if auto_enrich is not None and not isinstance(auto_enrich, bool):
            raise _error(400, "auto_enrich must be a boolean.")
        run_id = state.create_run(
            robot_id,
            start_urls=start_urls,
            budget=budget,
            auto_enrich=bool(auto_enrich),
            **emu.faults.run_marks(robot_id),
        )
        return JSONResponse({"id": run_id}, status_code=202)

    async def list_runs(request: Request) -> Response:
        rows, cursor = state.list_docs(
            limit=_int_param(request, "limit", 20, 100),
            cursor=request.query_params.get("cursor") or None,
            robot_id=request.query_params.get("robot_id") or None,
            status=request.query_params.get("status") or None,
        )
        return JSONResponse({"rows": rows, "nextCursor": cursor})

    async def get_run(request: Request) -> Response:
        return JSONResponse(state.run_doc(request.path_params["run_id"]))

    async def stop_run(request: Request) -> Response:
        state.stop(request.path_params["run_id"])
        return Response(status_code=204)

    async def restart_run(request: Request) -> Response:
        body = await _json_body(request, required=False)
        if body is not None and not isinstance(body, dict):
            raise _error(400, "The body must be a JSON object.")
        run_id = request.path_params["run_id"]
        try:
            marks = emu.faults.run_marks(state.view(run_id).robot_id)
        except KeyError:
            marks = {}  # restart answers 404
        new_id = state.restart(run_id, budget=_opt_budget(body or {}), **marks)
        return JSONResponse({"id": new_id}, status_code=202)

    async def list_captures(request: Request) -> Response:
        run_id = _required_param(request, "run_id")
        limit = _int_param(request, "limit", 100, 1000)
        cursor = request.query_params.get("cursor")
        offset = 0
        if cursor:
            data = decode_cursor(cursor, "captures")
            if data.get("run") != run_id or not isinstance(data.get("offset"), int):
                raise _error(400, f"Invalid cursor {cursor!r} for run {run_id}.")
            offset = data["offset"]
        spec = state.export_spec(run_id)
        stop = min(spec.count, offset + limit)
        faults = emu.faults
        rows = await run_in_threadpool(
            read_captures,
            run_id=spec.data_key,
            count=spec.count,
            start=offset,
            stop=stop,
            seed=emu.data_seed,
            host=spec.host,
            currency=spec.currency,
            store=spec.store,
            started_at=spec.started_at,
            ended_at=spec.ended_at,
            extra_columns=faults.export_extra_columns,
            drop_columns=tuple(faults.export_drop_columns),
        )
        nxt = encode_cursor("captures", run=run_id, offset=stop) if stop < spec.count else None
        return JSONResponse({"rows": rows, "nextCursor": nxt})

    async def export_captures(request: Request) -> Response:
        run_id = _required_param(request, "run_id")
        fmt = request.query_params.get("format") or "parquet"
        if fmt not in MEDIA_TYPES:
            raise _error(400, f"format must be parquet or jsonl, got {fmt!r}.")
        spec = state.export_spec(run_id)
        # One consistent view for this body; shape faults may target the run's robot.
        faults = emu._injector.for_export(state.view(run_id).robot_id)
        handle = await run_in_threadpool(emu._export_file, spec, fmt, faults)
        size = os.fstat(handle.fileno()).st_size
        filename = faults.content_disposition_filename
        if filename is None:
            filename = f"{run_id}.{fmt}"
        headers = {"content-disposition": f'attachment; filename="{filename}"'} if filename else {}
        return StreamingResponse(
            _stream_file(handle, size, faults), media_type=MEDIA_TYPES[fmt], headers=headers
        )

    # --- Admin ---

    async def admin_state(request: Request) -> Response:
        return JSONResponse(emu._admin_state())

    async def admin_faults(request: Request) -> Response:
        body = await _json_body(request, required=False) or {}
        if not isinstance(body, dict):
            raise _error(400, "The body must be a JSON object of Faults fields.")
        try:
            faults = emu.set_faults(**body)
        except (TypeError, ValueError) as exc:
            raise _error(400, str(exc)) from None
        return JSONResponse(faults.to_dict())

    async def admin_clock(request: Request) -> Response:
        body = await _json_body(request, required=False) or {}
        try:
            if "speed" in body:
                emu.clock.speed = float(body["speed"])
            if "advance" in body:
                emu.clock.advance(float(body["advance"]))
        except (TypeError, ValueError) as exc:
            raise _error(400, str(exc)) from None
        return JSONResponse({"now": emu.clock.now(), "speed": emu.clock.speed})

    async def admin_credits(request: Request) -> Response:
        body = await _json_body(request, required=True)
        if not isinstance(body, dict) or not all(
            isinstance(body.get(k, 0), int) for k in ("set", "add")
        ):
            raise _error(400, 'Send {"set": n} or {"add": n}.')
        if "set" in body:
            emu.set_credits(body["set"])
        if "add" in body:
            emu.set_credits(emu.credits + body["add"])
        return JSONResponse({"credits": emu.credits})

    async def admin_list_robots(request: Request) -> Response:
        return JSONResponse({"robots": [asdict(r) for r in emu.robots.values()]})

    async def run_page(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            doc = state.run_doc(run_id)
        except ApiError:
            return HTMLResponse(_unknown_run_html(run_id), status_code=404)
        return HTMLResponse(_run_html(doc))

    async def admin_robots(request: Request) -> Response:
        body = await _json_body(request, required=True)
        try:
            robot = emu.add_robot(
                body["id"],
                body["host"],
                body.get("name"),
                int(body.get("catalogue_size", 1000)),
                country=body.get("country", "US"),
                currency=body.get("currency", "USD"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise _error(400, f"Bad robot: {exc}") from None
        return JSONResponse(asdict(robot), status_code=201)

    async def admin_run_action(request: Request) -> Response:
        run_id, action = request.path_params["run_id"], request.path_params["action"]
        body = await _json_body(request, required=False) or {}
        if action == "stop":
            state.stop(run_id)
        elif action == "fail":
            state.fail(run_id, str(body.get("message") or "Robot crashed"))
        elif action == "finish":
            state.finish(run_id)
        elif action == "status":
            status = body.get("status")
            state.run_doc(run_id)  # 404 for unknown runs
            state.force_status(run_id, None if status is None else str(status))
        else:
            raise _error(404, f"Unknown run action {action!r}.")
        return JSONResponse(asdict(state.view(run_id)))

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse({"error": exc.error, "message": exc.message}, status_code=exc.status)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        status = exc.status_code
        return JSONResponse(
            {"error": ERROR_TYPES.get(status, "Error"), "message": str(exc.detail)},
            status_code=status,
            headers=exc.headers,
        )

    p, a = API_PREFIX, ADMIN_PREFIX
    routes = [
        Route(f"{p}/runs", create_run, methods=["POST"]),
        Route(f"{p}/runs", list_runs, methods=["GET"]),
        Route(f"{p}/runs/{{run_id}}", get_run, methods=["GET"]),
        Route(f"{p}/runs/{{run_id}}/stop", stop_run, methods=["POST"]),
        Route(f"{p}/runs/{{run_id}}/restart", restart_run, methods=["POST"]),
        Route(f"{p}/captures", list_captures, methods=["GET"]),
        Route(f"{p}/captures/export", export_captures, methods=["GET"]),
        Route(f"{a}/state", admin_state, methods=["GET"]),
        Route(f"{a}/faults", admin_faults, methods=["POST"]),
        Route(f"{a}/clock", admin_clock, methods=["POST"]),
        Route(f"{a}/credits", admin_credits, methods=["POST"]),
        Route(f"{a}/robots", admin_robots, methods=["POST"]),
        Route(f"{a}/robots", admin_list_robots, methods=["GET"]),
        Route(f"{RUN_PAGE_PREFIX}{{run_id:path}}", run_page, methods=["GET"]),
        Route(f"{a}/runs/{{run_id}}/{{action}}", admin_run_action, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={ApiError: on_api_error, HTTPException: on_http_error},
    )
    return _Gate(app, emu)


# --- The run page -------------------------------------------------------------------------

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


def _when(ms: Any) -> str:
    if not isinstance(ms, int | float):
        return "not yet"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _run_html(doc: dict[str, Any]) -> str:
    """A run document as a small HTML page; every value from the state is escaped."""
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
        f"<tr><th>{html.escape(label)}</th><td>{html.escape(str(value))}</td></tr>"
        for label, value in rows
    )
    live = doc["status"] in LIVE
    return _PAGE.format(
        title=html.escape(f"Extralt run {doc['_id']}: {doc['status']}"),
        refresh='<meta http-equiv="refresh" content="5">' if live else "",
        body=f"<table>\n{table}\n</table>",
    )


def _unknown_run_html(run_id: str) -> str:
    body = (
        f"<p>This emulator has no run <code>{html.escape(run_id)}</code>. Its runs live in memory "
        "only: an emulator that was restarted has forgotten the runs of the one before.</p>"
    )
    return _PAGE.format(title="Extralt run not found", refresh="", body=body)


def _stream_file(handle: BinaryIO, size: int, faults: Faults) -> Iterator[bytes]:
    """The body of an export, in 1 MiB chunks, with the export faults applied.

    A sync generator: Starlette iterates it in a worker thread, so disk reads never block the
    event loop.
    """
    limit = size
    if faults.export_truncate:
        limit = int(size * faults.export_truncate_fraction)
    cut = faults.export_cut_after_bytes
    if cut is not None:
        limit = min(limit, max(0, cut))
    garbled = []
    if faults.export_corrupt or faults.export_corrupt_page:
        garbled = _garbled_ranges(size, footer=faults.export_corrupt)
    pos = 0
    with contextlib.closing(handle):
        while pos < limit:
            chunk = handle.read(min(CHUNK_SIZE, limit - pos))
            if not chunk:
                break
            if garbled:
                chunk = _garble(chunk, pos, garbled)
            pos += len(chunk)
            yield chunk
    if cut is not None and cut < size:
        raise EmulatorAbort(f"export cut after {pos} bytes")


def _garbled_ranges(size: int, *, footer: bool = True) -> list[tuple[int, int]]:
    """Some bytes in the middle (a data page) and the last 16 (parquet's footer length and
    magic), so no reader can open the file, nor skip the damage. Without `footer`, only the
    middle: the file opens, and fails where a reader decodes that page."""
    mid = size // 2
    middle = (max(0, mid - 256), min(size, mid + 256))
    return [middle, (max(0, size - 16), size)] if footer else [middle]


def _garble(chunk: bytes, pos: int, ranges: list[tuple[int, int]]) -> bytes:
    out = bytearray(chunk)
    for lo, hi in ranges:
        a, b = max(lo, pos), min(hi, pos + len(chunk))
        if a < b:
            out[a - pos : b - pos] = b"\xff" * (b - a)
    return bytes(out)


__all__ = [
    "DEMO_API_KEY",
    "Emulator",
    "EmulatorAbort",
    "RecordedRequest",
    "RunView",
]
