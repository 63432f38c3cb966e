"""Run (domain, stream) jobs in separate processes, so a sync can use more than one core.

Each job is a whole `sync_stream` in its own process with its own connections, lock and
transactions, so crash safety is exactly that of a sequential run. Workers die with the process
that started them (Linux), so a killed scheduler leaves no orphan holding a stream's lock.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable

from etl.config import Settings
from etl.errors import EtlError, Interrupted

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1


def _worker_init(log_level: str, log_format: str) -> None:
    from etl import memory, stopping
    from etl.logs import setup_logging

    setup_logging(log_level, log_format)
    memory.tune()
    signal.signal(signal.SIGTERM, stopping.on_sigterm)
    if sys.platform.startswith("linux"):
        # Die with the parent, as a sequential run would: PostgreSQL rolls back the open page
        # and the next run marks this one abandoned.
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            log.warning("workers will not stop with their parent (prctl: errno %d)",
                        ctypes.get_errno())


def _portable(exc: BaseException, message: str) -> EtlError:
    """An exception that survives the trip back to the parent process, keeping its exit code."""
    if isinstance(exc, EtlError):
        try:
            return type(exc)(str(exc))
        except TypeError:
            pass
    error = EtlError(message)
    error.exit_code = getattr(exc, "exit_code", error.exit_code)
    return error


def _run(job_function: Callable, settings: Settings, url: str, schema: str, job: tuple,
         invocation: tuple[str, str]):
    from etl import runinfo

    runinfo.begin(invocation[1], invocation[0])  # the parent's: one id for the whole command
    report = job_function(settings, url, schema, job)
    if report.exception is not None:
        report.exception = _portable(report.exception, report.error or "")
    return report


def run_parallel(job_function: Callable, settings: Settings, url: str, schema: str,
                 jobs: list[tuple], workers: int, invocation: tuple[str, str],
                 cancelled: Callable[[tuple, BaseException], object]) -> list:
    """Run `job_function(settings, url, schema, job)` for each job, `workers` at a time, each
    in a process of its own; it returns a report (with `.exception` when it failed) and must
    be a module-level function (it is sent to the workers by name). Reports come back in the
    order of `jobs`; a job cancelled before it started (a SIGTERM) gets `cancelled(job, exc)`.

    A SIGTERM to this process is passed on to the workers, which stop as a sequential run
    does: the page being loaded commits, then each reports itself interrupted.
    """
    from etl import stopping

    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context,
                                   initializer=_worker_init,
                                   initargs=(settings.log_level, settings.log_format))
    processes = lambda: list(getattr(executor, "_processes", {}).values())  # noqa: E731
    try:
        futures = {executor.submit(_run, job_function, settings, url, schema, job, invocation): i
                   for i, job in enumerate(jobs)}
        reports: list = [None] * len(jobs)
        pending, forwarded = set(futures), False
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in done:
                if not future.cancelled():
                    reports[futures[future]] = future.result()
            if stopping.requested() and not forwarded:
                forwarded = True
                for future in pending:
                    future.cancel()  # not started yet: nothing to stop
                for process in processes():
                    if process.is_alive():
                        os.kill(process.pid, signal.SIGTERM)
        for i, job in enumerate(jobs):
            if reports[i] is None:  # cancelled before it started
                reports[i] = cancelled(job, Interrupted(stopping.MESSAGE))
        return reports
    except BaseException:
        for process in processes():
            process.terminate()  # they record 'interrupted' and roll back their open page
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
