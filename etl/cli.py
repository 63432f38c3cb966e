"""`commcare-etl`: the command line. Each command is a thin face over the library."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from datetime import timedelta
from typing import Callable, Sequence

from etl import __version__, memory, stopping
from etl.config import Settings, load_settings
from etl.errors import ConfigError, EtlError, ExitCode
from etl.logs import setup_logging

log = logging.getLogger("etl")


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(
        commcare_domain=getattr(args, "domain", None),
        streams=getattr(args, "stream", None),
        log_level=getattr(args, "log_level", None),
        log_format=getattr(args, "log_format", None),
    )
    setup_logging(settings.log_level, settings.log_format)
    return settings


_opened: list = []  # the warehouses this command opened, closed when it ends


def _warehouse(settings: Settings):
    from etl.db import Warehouse

    warehouse = Warehouse.open(settings.database_url, settings.embedded_pg_dir,
                               settings.warehouse_schema)
    _opened.append(warehouse)
    return warehouse


def _close_warehouses() -> None:
    """Close the connections a command kept for reuse, so that it leaves none open."""
    while _opened:
        try:
            _opened.pop().dispose()
        except Exception:  # noqa: BLE001 - the command's own outcome is what is reported
            log.debug("closing the warehouse's connections failed", exc_info=True)


# --- commands ------------------------------------------------------------------------------

def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    warehouse = _warehouse(settings)
    warehouse.migrate()
    log.info("warehouse schema %r is up to date in %s", settings.warehouse_schema,
             warehouse.display_url())
    return ExitCode.OK


def _hq_command(args: argparse.Namespace, trigger: str):
    """What every command that reads HQ starts with: an invocation, settings with credentials,
    a migrated warehouse."""
    from etl import runinfo

    runinfo.begin(trigger)
    settings = _settings(args)
    settings.require_hq_credentials()
    warehouse = _warehouse(settings)
    warehouse.migrate()
    return settings, warehouse


def _domains(args: argparse.Namespace, settings: Settings) -> list[str]:
    return [args.domain] if args.domain else settings.domains()


def cmd_sync(args: argparse.Namespace) -> int:
    from etl.sync import run_sync

    settings, warehouse = _hq_command(args, "manual")
    reports = run_sync(settings, warehouse, domains=_domains(args, settings))
    from etl.reconcile import run_due

    if not run_due(settings, warehouse):
        raise EtlError("the sync finished, but a reconcile due by RECONCILE_EVERY failed")
    failed = [r for r in reports if r.status != "ok"]
    if failed:
        first = failed[0]
        error = EtlError(f"{len(failed)} of {len(reports)} stream(s) failed; first: "
                         f"{first.stream} [{first.domain}]: {first.error}")
        # One kind of failure says what to do (4: nothing failed, another run had the work;
        # 2: a setting to fix; 3: credentials); mixed kinds are 1.
        codes = {getattr(r.exception, "exit_code", ExitCode.FAILURE) for r in failed}
        error.exit_code = codes.pop() if len(codes) == 1 else ExitCode.FAILURE
        raise error
    total = sum(r.records for r in reports)
    log.info("sync finished: %d stream(s), %d records", len(reports), total)
    return ExitCode.OK


def cmd_run(args: argparse.Namespace) -> int:
    from etl import runinfo
    from etl.schedule import Schedule, run_forever
    from etl.sync import run_sync

    settings = _settings(args)
    settings.require_hq_credentials()
    schedule = Schedule.parse(args.every or settings.schedule)
    warehouse = _warehouse(settings)

    def turn() -> bool:
        from etl.reconcile import run_due

        runinfo.begin("schedule")  # each turn is an invocation of its own
        try:
            warehouse.migrate()
            reports = run_sync(settings, warehouse)
            reconciled = run_due(settings, warehouse)
        finally:
            warehouse.close_idle()  # no connection held while the schedule waits
        failed = [r for r in reports if r.status != "ok"]
        if failed:
            log.error("%d of %d stream(s) failed; first: %s [%s]: %s", len(failed), len(reports),
                      failed[0].stream, failed[0].domain, failed[0].error)
        else:
            log.info("sync finished: %d stream(s), %d records", len(reports),
                     sum(r.records for r in reports))
        return not failed and reconciled

    return run_forever(turn, schedule)


def _one_domain(settings: Settings, given: str | None) -> str:
    if given:
        return given
    domains = settings.domains()
    if len(domains) == 1:
        return domains[0]
    if not domains:
        raise ConfigError("no domain: set COMMCARE_DOMAIN or pass --domain")
    raise ConfigError(f"several domains are configured ({', '.join(domains)}): "
                      f"pass --domain to say which one")


def cmd_backfill(args: argparse.Namespace) -> int:
    from etl.dates import parse_user_date
    from etl.sync import run_backfill

    try:
        since = parse_user_date(args.since) if args.since else None
        until = parse_user_date(args.until) if args.until else None
        if until and len(args.until.strip()) == 10:  # a date alone: include that whole day
            until += timedelta(days=1, microseconds=-1)
    except ValueError as exc:
        raise ConfigError(f"--since/--until: {exc}") from None
    if since and until and since > until:
        raise ConfigError("--since must not be after --until")
    settings, warehouse = _hq_command(args, "backfill")
    for domain in _domains(args, settings):
        report = run_backfill(settings.for_domain(domain), warehouse, args.resource, domain,
                              since, until)
        print(report.summary())
    return ExitCode.OK


def cmd_reconcile(args: argparse.Namespace) -> int:
    from etl.reconcile import reconcile

    settings, warehouse = _hq_command(args, "reconcile")
    for domain in _domains(args, settings):
        for resource in [args.resource] if args.resource else ["cases", "forms"]:
            report = reconcile(settings.for_domain(domain), warehouse, domain, resource)
            print(f"reconcile {resource} [{domain}]: {report.listed} listed in HQ, "
                  f"{report.marked} gone and marked deleted ({report.requests} requests)")
    return ExitCode.OK


def cmd_reset(args: argparse.Namespace) -> int:
    from etl.sync import reset_streams

    settings = _settings(args)
    domain = _one_domain(settings, args.domain)
    warehouse = _warehouse(settings)
    warehouse.migrate()
    from etl import sources

    streams = [args.resource] if args.resource != "all" else sources.names()
    deleted = reset_streams(settings, warehouse, domain, streams, wait_seconds=args.wait)
    log.info("reset %s [%s]: %d checkpoint(s) forgotten; the next sync re-reads everything "
             "(warehouse rows are kept)", ", ".join(streams), domain, deleted)
    return ExitCode.OK


def cmd_status(args: argparse.Namespace) -> int:
    from etl import state, status

    settings = _settings(args)
    warehouse = _warehouse(settings)  # only reads: no migration, no lock, nothing written
    with warehouse.connect() as conn:
        if not state.has_tables(conn, settings.warehouse_schema):
            report = {"version": status.SCHEMA_VERSION, "schema": settings.warehouse_schema,
                      "streams": [], "dead_letters": 0}
            if args.json:
                print(json.dumps(report, indent=2))
            else:
                print(f"the warehouse has no commcare-etl tables in schema "
                      f"{settings.warehouse_schema!r} yet: run `commcare-etl sync` (or `migrate`)")
            return ExitCode.OK
        report = status.collect(conn, settings.warehouse_schema)
    if args.hq:
        from etl.extract.client import make_client

        settings.require_hq_credentials()
        client = make_client(settings)
        try:
            for entry in report["streams"]:
                status.ask_hq(entry, client, settings.case_api)
        finally:
            client.close()
    print(json.dumps(report, indent=2) if args.json else status.render_text(report))
    if args.healthy:
        failing = [f"{e['stream']} [{e['domain']}]" for e in report["streams"]
                   if (e["last_run"] or {}).get("status") == "failed"]
        if failing:
            log.error("unhealthy: the last run of %s failed", ", ".join(failing))
            return ExitCode.FAILURE
    return ExitCode.OK


def cmd_embedded_db(args: argparse.Namespace) -> int:
    from etl.db import embedded_url, start_embedded, stop_embedded

    settings = _settings(args)
    pgdata = settings.embedded_pg_dir
    if args.action == "start":
        print(f"running: psql '{start_embedded(pgdata)}'")
    elif args.action == "stop":
        print(f"stopped the embedded PostgreSQL in {pgdata}" if stop_embedded(pgdata)
              else f"the embedded PostgreSQL in {pgdata} was not running")
    else:
        url = embedded_url(pgdata)
        print(f"running: psql '{url}'" if url else
              f"not running ({pgdata}); the next command that needs it starts it")
    return ExitCode.OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from etl.simulator import serve

    setup_logging(getattr(args, "log_level", None) or "INFO",
                  getattr(args, "log_format", None) or os.environ.get("LOG_FORMAT", "text"))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # nothing to finish: SIGTERM just ends it
    serve(host=args.host, port=args.port, domain=args.sim_domain, n_cases=args.cases,
          seed=args.seed, username=args.username, api_key=args.api_key,
          replicas=args.replicas, rate_limit=args.rate_limit)
    return ExitCode.OK


def cmd_demo(args: argparse.Namespace) -> int:
    from etl.demo import run_demo

    settings = _settings(args)
    return run_demo(settings, n_cases=args.cases, use_database_url=args.use_database_url)


# --- parser --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from etl import sources

    parser = argparse.ArgumentParser(
        prog="commcare-etl",
        description="Keep a PostgreSQL warehouse in sync with CommCare HQ.",
        epilog="Settings come from the environment, .env or config/commcare-etl.toml; "
               "see README.md. Exit codes: 0 ok, 1 failure, 2 configuration, 3 authentication, "
               "4 another run holds the lock, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"commcare-etl {__version__}")
    logging_options = argparse.ArgumentParser(add_help=False)
    logging_options.add_argument("--log-level", default=argparse.SUPPRESS,
                                 help="DEBUG, INFO (default), WARNING or ERROR (LOG_LEVEL)")
    logging_options.add_argument("--log-format", choices=("text", "json"),
                                 default=argparse.SUPPRESS,
                                 help="text (default) or json, one object per line (LOG_FORMAT)")
    for action in logging_options._actions:
        parser._add_action(action)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable, help_text: str,
            formatter: type = argparse.HelpFormatter) -> argparse.ArgumentParser:
        # The logging options work before and after the command (`sync --log-level DEBUG`).
        p = sub.add_parser(name, help=help_text, description=help_text,
                           parents=[logging_options], formatter_class=formatter)
        p.set_defaults(func=func)
        return p

    p = add("sync", cmd_sync, "Migrate, then sync apps, cases and forms incrementally.")
    p.add_argument("--domain", help="only this project space (default: COMMCARE_DOMAIN)")
    p.add_argument("--stream", choices=sources.names(), action="append",
                   help="only this stream (repeatable; default: all)")

    p = add("run", cmd_run, "Sync on a schedule until stopped: the container's job. A failed "
            "run is logged and tried again sooner; SIGTERM lets the pages in flight commit and "
            "exits 0.")
    p.add_argument("--every", metavar="SCHEDULE",
                   help="an interval (15m, 1h, 90s) or a cron expression ('*/15 * * * *', UTC); "
                        "default: SCHEDULE (15m)")

    p = add("backfill", cmd_backfill,
            "Re-read a window of indexed_on and upsert it, leaving the sync checkpoint alone.")
    p.add_argument("--resource", choices=sources.names(backfill_only=True), required=True)
    p.add_argument("--since", help="start of the window (YYYY-MM-DD[THH:MM:SS], UTC); "
                                   "default: the beginning")
    p.add_argument("--until", help="end of the window (inclusive); default: now")
    p.add_argument("--domain", help="only this project space (default: all configured)")

    p = add("reconcile", cmd_reconcile,
            "List the ids HQ still has and mark the cases and forms deleted there deleted = true "
            "(in the BI tables too). Never removes a row; an incomplete listing marks nothing.")
    p.add_argument("--resource", choices=("cases", "forms"), help="default: both")
    p.add_argument("--domain", help="only this project space (default: all configured)")

    p = add("reset", cmd_reset,
            "Forget a stream's checkpoint so the next sync re-reads it all (keeps the data).")
    p.add_argument("--resource", choices=[*sources.names(), "all"], required=True)
    p.add_argument("--domain", help="required when several domains are configured")
    p.add_argument("--wait", type=float, default=900, metavar="SECONDS",
                   help="how long to wait for a running sync of the stream to finish "
                        "(default 900; then exit 4 having changed nothing)")

    add("migrate", cmd_migrate, "Create or upgrade the warehouse tables, and nothing else.")
    p = add("status", cmd_status, "Show where each stream stands: checkpoint, last run, last "
            "success, dead letters. Reads only.")
    p.add_argument("--json", action="store_true", help="a stable JSON document, for monitoring")
    p.add_argument("--hq", action="store_true",
                   help="also ask HQ how much is newer than each checkpoint (one request each)")
    p.add_argument("--healthy", action="store_true",
                   help="exit 1 when the last run of any stream failed (a container healthcheck)")

    p = add("embedded-db", cmd_embedded_db,
            "Start, stop or show the embedded PostgreSQL (the warehouse while DATABASE_URL is "
            "unset); it keeps running after other commands exit.")
    p.add_argument("action", choices=("status", "start", "stop"))

    p = add("demo", cmd_demo, "Sync the built-in HQ simulator's sample data into PostgreSQL.")
    p.add_argument("--cases", type=int, default=500, help="sample cases to generate (default 500)")
    p.add_argument("--use-database-url", action="store_true",
                   help="write the sample data into the database DATABASE_URL names (by default "
                        "the demo refuses to touch a configured warehouse)")

    p = add("simulate", cmd_simulate, "Run the HQ simulator alone, for trying things by hand: "
            "point COMMCARE_BASE_URL at it, with the username and API key below.",
            argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--domain", dest="sim_domain", default="demo",
                   help="the project space it serves")
    p.add_argument("--cases", type=int, default=500, help="sample cases to generate")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    p.add_argument("--username", default="demo@example.org", help="the user it accepts")
    p.add_argument("--api-key", default="demo-key", help="that user's API key")
    p.add_argument("--replicas", type=int, default=3,
                   help="search index copies answering case/form lists, each ordering records "
                        "with equal indexed_on its own way, as HQ's do (1: a stable order)")
    p.add_argument("--rate-limit", action="store_true",
                   help="answer 429 beyond HQ's per-project rate limit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()  # which imports the pipeline: what start-up makes is made now
    memory.tune()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, stopping.on_sigterm)
    # Until the settings are read (they may be what is wrong), log as the environment asks, so
    # that with LOG_FORMAT=json even a configuration error is a JSON line.
    early_format = getattr(args, "log_format", None) or os.environ.get("LOG_FORMAT", "text")
    setup_logging("INFO", "json" if early_format.strip().lower() == "json" else "text")
    logging.captureWarnings(True)  # library warnings become log lines too
    try:
        return args.func(args)
    except EtlError as exc:
        _fail(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _fail("interrupted; the checkpoint stays at the last loaded page")
        return ExitCode.INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the operator gets one line, the log the details
        import psycopg

        database_errors: tuple[type[BaseException], ...] = (psycopg.Error,)
        if "sqlalchemy.exc" in sys.modules:  # loaded only if a migration ran
            database_errors += (sys.modules["sqlalchemy.exc"].SQLAlchemyError,)
        if isinstance(exc, database_errors):
            _fail(f"database error: {str(exc).strip().splitlines()[0]}; the checkpoint stays "
                  f"at the last loaded page")
        else:
            log.exception("unexpected error")
            _fail(f"unexpected error: {type(exc).__name__}: {exc} (please report this)")
        return ExitCode.FAILURE
    finally:
        _close_warehouses()


def _fail(message: str) -> None:
    """One line that says why the run failed, whether or not logging is set up yet."""
    if logging.getLogger().handlers:
        log.error(message)
    else:
        print(f"commcare-etl: error: {message}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
