"""The endpoint's error model, used by every interface.

useapi.net answers failures as ``{"error": ..., "errorDetails": ..., "code": ...}``. The
same exception travels from the core to the slash-command reply and to the HTTP API,
so a rule's text is written once and reads the same everywhere.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A failure a user should see: an HTTP-like ``code`` and the exact ``error`` text."""

    def __init__(self, code: int, error: str, error_details: str | None = None, **extra: Any) -> None:
        super().__init__(error)
        self.code = code
        self.error = error
        self.error_details = error_details
        # Extra fields of the endpoint's model (for example ``executingJobs`` on a 429).
        self.extra = extra
        # A 429's estimate of the seconds until trying again is worth it (the Retry-After header).
        self.retry_after: int | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "code": self.code}
        if self.error_details:
            body["errorDetails"] = self.error_details
        body.update(self.extra)
        return body

    def __repr__(self) -> str:
        return f"ApiError(code={self.code!r}, error={self.error!r})"


def bad_request(error: str, error_details: str | None = None) -> ApiError:
    return ApiError(400, error, error_details)


UNAUTHORIZED = "Unauthorized"
INTERNAL_ERROR = "Something went wrong on our side; the error was logged. Please try again later"
CONFIGURATION_NOT_FOUND = "Configuration not found"


def unauthorized() -> ApiError:
    return ApiError(401, UNAUTHORIZED)


def not_found(error: str = CONFIGURATION_NOT_FOUND) -> ApiError:
    return ApiError(404, error)


DATABASE_BUSY = "The database is busy; please try again in a moment"
DATABASE_UNWRITABLE = "The database cannot be written; nothing was saved"
DATABASE_UNREACHABLE = "The database cannot be reached; please try again in a moment"
# TOKEN_ENCRYPTION_KEY's fault, as the settings read it and as the key cipher meets it.
NOT_A_FERNET_KEY = ("is not a valid Fernet key (32 url-safe base64-encoded bytes); make one with: python -c"
                    ' "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"')


class StoreError(Exception):
    """A storage failure with an honest answer, raised by a store adapter in domain terms."""


class StoreBusy(StoreError):
    """Another process held the store's lock past the wait allowed."""


class StoreUnwritable(StoreError):
    """The store cannot take writes (a full disk, an I/O error); the transaction was rolled back whole."""


class StoreUnavailable(StoreError):
    """The database server cannot be reached (connection lost or refused); nothing was committed
    by the call that got this, or its transaction was rolled back whole by the server."""


def from_exception(exc: BaseException) -> ApiError | None:
    """An infrastructure failure that has an honest answer other than 500."""
    if isinstance(exc, StoreUnwritable):
        return ApiError(503, DATABASE_UNWRITABLE)
    if isinstance(exc, StoreBusy):
        return ApiError(503, DATABASE_BUSY)
    if isinstance(exc, StoreUnavailable):
        return ApiError(503, DATABASE_UNREACHABLE)
    return None


class StartupError(Exception):
    """A problem that stops the bot before it connects; printed as one line, no traceback.
    ``lasting``: no restart can help (a key, a file, a password must change): exit code 2, as for a
    settings error, which restart policies leave alone; otherwise 1, worth a retry."""

    def __init__(self, message: str = "", *, lasting: bool = False) -> None:
        super().__init__(message)
        self.lasting = lasting
