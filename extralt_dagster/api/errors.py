"""Typed errors: callers branch on the class, people read the message.

The tree, like httpx's: catch a branch to handle everything under it.

    ExtraltError                          anything this package raises on purpose
    ├── ExtraltAPIError                   the API answered with an error status, or an unreadable body
    │   ├── ExtraltAuthError              401, 403 (and a missing key, before any request)
    │   ├── ExtraltInsufficientCreditsError   402
    │   ├── ExtraltNotFoundError          404
    │   ├── ExtraltConflictError          409
    │   ├── ExtraltValidationError        400, 422, and bad input caught before any request
    │   ├── ExtraltRateLimitError         429 past every retry
    │   └── ExtraltServerError            5xx past every retry
    ├── ExtraltConnectionError            no complete HTTP answer
    │   ├── ExtraltConnectError           never reached the server: safe to send again
    │   └── ExtraltReadError              sent, but the answer did not arrive whole: a create may
    │                                     have been processed
    ├── ExtraltUnknownStatusError         a run status this client does not know
    ├── ExtraltRunFailedError             the remote run ended failed or stopped
    ├── ExtraltTimeoutError               the remote run outlived the poll timeout
    └── ExtraltExportError                the export is cut, too large or unreadable

No message, repr or attribute ever holds the API key: errors are built from the server's JSON
body and our own text, never from request headers.
"""

from __future__ import annotations


class ExtraltError(Exception):
    """Base of every error this package raises on purpose."""


class ExtraltAPIError(ExtraltError):
    """The API answered with an error status, or with a body we cannot read.

    `message` is this exception's own message; `server_message` is the text the server sent
    (its JSON `message`), `error` its error type. `retry_after` is the server's Retry-After in
    seconds, when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error: str | None = None,
        server_message: str | None = None,
        method: str | None = None,
        path: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error = error
        self.server_message = server_message
        self.method = method
        self.path = path
        self.retry_after = retry_after


class ExtraltAuthError(ExtraltAPIError):
    """401 or 403: the key is missing, wrong, or has no access."""


class ExtraltInsufficientCreditsError(ExtraltAPIError):
    """402: the account cannot pay for the run."""


class ExtraltNotFoundError(ExtraltAPIError):
    """404: unknown robot or run."""


class ExtraltConflictError(ExtraltAPIError):
    """409: the request conflicts with the resource's state (e.g. stopping a finished run)."""


class ExtraltValidationError(ExtraltAPIError, ValueError):
    """400/422 from the server, or bad input caught before any request."""


class ExtraltRateLimitError(ExtraltAPIError):
    """429 that outlived every retry."""


class ExtraltServerError(ExtraltAPIError):
    """5xx that outlived every retry."""


class ExtraltConnectionError(ExtraltError):
    """The request never got a complete HTTP answer.

    Branch on the subclass: `ExtraltConnectError` never reached the server, `ExtraltReadError`
    may have. `cause_kind` is the name of what went wrong underneath (httpx's exception name,
    e.g. "ConnectError" or "ReadTimeout"), for people and logs.
    """

    def __init__(self, message: str, *, cause_kind: str | None = None) -> None:
        super().__init__(message)
        self.cause_kind = cause_kind or type(self).__name__


class ExtraltConnectError(ExtraltConnectionError):
    """No connection was made (refused, DNS, connect or pool timeout): nothing was sent."""


class ExtraltReadError(ExtraltConnectionError):
    """The request went out but its answer did not come whole (read timeout, cut body)."""


class ExtraltUnknownStatusError(ExtraltError):
    """The API reported a run status this client does not know; never treated as done."""

    def __init__(self, status: str, run_id: str | None = None) -> None:
        where = f" for run {run_id}" if run_id else ""
        super().__init__(
            f"Extralt reported an unknown run status {status!r}{where}. "
            "Refusing to treat it as finished; upgrade extralt-dagster or check the run "
            "on the Extralt dashboard."
        )
        self.status = status
        self.run_id = run_id


class ExtraltRunFailedError(ExtraltError):
    """The remote run ended failed or stopped."""

    def __init__(self, message: str, *, run_id: str, status: str) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.status = status


class ExtraltTimeoutError(ExtraltError):
    """The remote run outlived the poll timeout."""

    def __init__(self, message: str, *, run_id: str, stopped: bool) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.stopped = stopped


class ExtraltExportError(ExtraltError):
    """The export could not be downloaded whole, or is not a readable file."""
