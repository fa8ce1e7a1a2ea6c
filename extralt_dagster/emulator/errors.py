"""The API's error answers: `{"error": type, "message": message}` with an HTTP status."""

#: The `error` type the API names for each status it answers with.
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


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "Error")


class ApiError(Exception):
    """An error the API answers with: `{"error": type, "message": message}` and `status`."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message

    @classmethod
    def of(cls, status: int, message: str) -> "ApiError":
        """The error of `status`, with the type the API names for it."""
        return cls(status, error_type(status), message)
