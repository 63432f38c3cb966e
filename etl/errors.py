"""Errors that reach an operator, each with the exit code the CLI returns for it.

Every message should say what went wrong *and* what to do about it.
"""

from __future__ import annotations


class ExitCode:
    OK = 0
    FAILURE = 1  # a stream did not finish: HQ or the database kept failing
    CONFIG = 2  # missing/invalid settings or command-line usage
    AUTH = 3  # HQ refused the credentials or the permission
    LOCKED = 4  # another run holds the lock for the same domain and stream
    INTERRUPTED = 130  # Ctrl-C / SIGTERM


class EtlError(Exception):
    """Base class: an error with an operator-facing message and an exit code."""

    exit_code = ExitCode.FAILURE


class ConfigError(EtlError):
    exit_code = ExitCode.CONFIG


class AuthError(EtlError):
    exit_code = ExitCode.AUTH


class LockBusyError(EtlError):
    exit_code = ExitCode.LOCKED


class HQError(EtlError):
    """HQ kept failing (after retries) or answered with something we cannot use."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None):
        super().__init__(message)
        self.url = url
        self.status = status


class HQRequestRejected(HQError):
    """HQ answered 4xx to a request: retrying the same request cannot help."""


class HQNotFound(HQRequestRejected):
    """HQ answered 404 for a list: no such project space (or not CommCare HQ at that URL)."""

    exit_code = ExitCode.CONFIG


class HQUnreachable(HQError):
    """HQ could not be reached at all (refused, DNS, no route) before it ever answered."""


class MalformedResponse(HQError):
    """A 200 answer whose body is not the JSON document the API promises."""


class Interrupted(EtlError):
    exit_code = ExitCode.INTERRUPTED


def describe_failure(exc: BaseException) -> str:
    """One line for an operator: what failed, and that the checkpoint did not move past it."""
    if isinstance(exc, EtlError):
        return str(exc)
    if _is_database_error(exc):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return (f"database error ({type(exc).__name__}): {first}; the checkpoint stays at the "
                f"last loaded page. Check the warehouse database (its log, disk space, "
                f"permissions) and run again")
    return (f"unexpected error: {type(exc).__name__}: {exc}; the checkpoint stays at the last "
            f"loaded page (please report this)")


def _is_database_error(exc: BaseException) -> bool:
    import psycopg

    return isinstance(exc, psycopg.Error)
