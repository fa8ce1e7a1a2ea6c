"""The gate in front of the app: it records every request, checks the key, applies the request
faults and the rate limit, then lets the request through to the routes.

Pure ASGI middleware, so it sees the real response status, streamed bodies included. It works
through small collaborators (the request log, the fault injector, the rate limiter), never the
emulator itself.
"""

import asyncio
import hmac
import json
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from .clock import EmulatorClock
from .errors import error_type
from .faults import FaultInjector, RequestFault

ADMIN_PREFIX = "/_emulator"
RUN_PAGE_PREFIX = "/runs/"  # the dashboard links the client logs: `<base_url>/runs/<run id>`
MAX_RECORDED = 1_000_000  # requests kept in the log, so a long CLI session stays bounded
MAX_RECORDED_BODY = 64 << 10  # bytes of a request body kept (an API request body is small)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    status: int  # 0 while no response has started
    at: float  # emulated epoch seconds when the request arrived
    user_agent: str = ""  # what the client says it is (never the key: no other header is kept)
    body: bytes = b""  # the body as far as it was read (its first MAX_RECORDED_BODY bytes)

    @property
    def json(self) -> Any:
        """The body parsed as JSON; None when there was no body (or it is not JSON)."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


@dataclass
class LoggedRequest:
    """A request in the log; the gate fills in `status` when the response starts, and `body`
    as the request's body is read."""

    method: str
    path: str
    query: dict[str, str]
    at: float
    status: int = 0
    user_agent: str = ""
    body: bytearray = field(default_factory=bytearray)

    def snapshot(self) -> RecordedRequest:
        return RecordedRequest(
            self.method,
            self.path,
            dict(self.query),
            self.status,
            self.at,
            self.user_agent,
            bytes(self.body),
        )

    def receiving(self, receive: Receive) -> Receive:
        """`receive`, keeping a copy of the body it delivers."""

        async def recorded() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                room = MAX_RECORDED_BODY - len(self.body)
                self.body += message.get("body", b"")[: max(room, 0)]
            return message

        return recorded


class RequestLog:
    """The newest `MAX_RECORDED` requests, stamped with the emulated time they arrived."""

    def __init__(self, clock: EmulatorClock, maxlen: int = MAX_RECORDED) -> None:
        self.clock = clock
        self._entries: deque[LoggedRequest] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def record(
        self, method: str, path: str, query: dict[str, str], user_agent: str = ""
    ) -> LoggedRequest:
        entry = LoggedRequest(method, path, query, self.clock.now(), user_agent=user_agent)
        with self._lock:
            self._entries.append(entry)
        return entry

    def snapshot(self) -> list[RecordedRequest]:
        """Every request kept, oldest first."""
        with self._lock:
            return [entry.snapshot() for entry in self._entries]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class RateLimiter:
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


def bearer_matches(header: str | None, api_key: str) -> bool:
    """`header` is `Bearer <api_key>` (compared in constant time)."""
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), api_key.encode()
    )


@dataclass
class Gate:
    """Records, authenticates, faults and rate-limits every request before `app` sees it.

    `stopping` is set when the emulator stops: delays and endless bodies end then, so shutdown
    never waits on a fault.
    """

    app: ASGIApp
    api_key: str
    log: RequestLog
    injector: FaultInjector
    limiter: RateLimiter | None
    stopping: threading.Event

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), True))
        entry = self.log.record(method, path, query, headers.get("user-agent", ""))
        receive = entry.receiving(receive)

        async def send_recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
            await send(message)

        if method in ("GET", "HEAD") and path.startswith(RUN_PAGE_PREFIX):
            # A read-only page a person opens from a log link, in a browser that sends no key;
            # it shows nothing the key protects, and takes no faults.
            await self.app(scope, receive, send_recorded)
        elif not bearer_matches(headers.get("authorization"), self.api_key):
            await _send_error(
                send_recorded,
                401,
                "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
            )
        elif path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            await self.app(scope, receive, send_recorded)
        else:
            key = headers["authorization"].partition(" ")[2].strip()
            await self._api_request(scope, receive, send_recorded, key)

    async def _api_request(self, scope: Scope, receive: Receive, send: Send, key: str) -> None:
        """An authenticated API request: its request faults, then the rate limit, then the app."""
        fault = self.injector.for_request(scope["method"], scope["path"])
        if fault.latency:
            # A slow server has the request, body and all, before it is slow: a create that
            # the client gives up on still starts its run.
            receive = await _buffered(receive)
            await self._pause(fault.latency)
        if await self._answer_fault(fault, scope, receive, send):
            return
        if self.limiter is not None:
            wait = self.limiter.take(key)
            if wait is not None:
                await _send_error(
                    send,
                    429,
                    "Rate limit exceeded: about 120 requests per minute, bursts of 30.",
                    {"retry-after": str(max(1, math.ceil(wait)))},
                )
                return
        await self.app(scope, receive, send)

    async def _answer_fault(
        self, fault: RequestFault, scope: Scope, receive: Receive, send: Send
    ) -> bool:
        """Answer with `fault` instead of the app; False if it has no answer to give."""
        faults = self.injector.faults
        if fault.endless:
            await self._send_endless(send, receive)
        elif fault.wrong_body is not None:
            await _send_raw(send, faults.wrong_body_status, fault.wrong_body)
        elif fault.status is not None:
            if fault.after_handling:
                await self.app(scope, receive, _discard)
            extra = _retry_after(fault.retry_after)
            await _send_error(send, fault.status, "Injected fault", extra)
        else:
            return False
        return True

    async def _pause(self, seconds: float) -> None:
        """Sleep, but end early when the emulator stops, so shutdown never waits on a fault."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.05))

    async def _send_endless(self, send: Send, receive: Receive) -> None:
        """A 200 whose body never ends (the `endless_body` fault): it trickles, or stalls, until
        the client hangs up or the emulator stops."""
        faults = self.injector.faults
        interval, size = faults.endless_interval_seconds, faults.endless_chunk_bytes
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        try:
            await _send_start(send, 200, [(b"content-type", b"application/json")])
            await send({"type": "http.response.body", "body": b'{"rows": [', "more_body": True})
            while not gone.is_set() and not self.stopping.is_set():
                if interval is None:
                    await asyncio.sleep(0.05)
                    continue
                await send({"type": "http.response.body", "body": b" " * size, "more_body": True})
                await asyncio.sleep(interval)
        except OSError:
            pass  # the client hung up mid-send
        finally:
            watcher.cancel()


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


def _retry_after(seconds: float | None) -> dict[str, str]:
    return {} if seconds is None else {"retry-after": str(max(0, math.ceil(seconds)))}


async def _send_start(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _send_json(
    send: Send, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    """A whole response of `body`, sent as JSON with its length."""
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await _send_start(send, status, raw)
    await send({"type": "http.response.body", "body": body})


async def _send_raw(send: Send, status: int, body: str) -> None:
    await _send_json(send, status, body.encode())


async def _send_error(
    send: Send, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"error": error_type(status), "message": message}).encode()
    await _send_json(send, status, body, headers)
