"""`commcare-etl status`: where each (domain, stream) stands, read from the warehouse only
(and, with `--hq`, one cheap request per stream asking HQ how much is newer).

The `--json` shape is a public contract for monitoring (see README, "Operations"): keys are
only ever added.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from etl.dates import format_iso, format_v05, parse_hq_datetime

SCHEMA_VERSION = 1


def _iso(value: datetime | None) -> str | None:
    return format_iso(value) if value is not None else None


def collect(conn: psycopg.Connection, schema: str) -> dict[str, Any]:
    """Every (domain, stream) with a checkpoint or a run: checkpoint, last run, last success,
    dead letters."""
    s = sql.Identifier(schema)
    checkpoints = {(d, st, p): (cursor, kind, moved) for d, st, p, cursor, kind, moved in
                   conn.execute(sql.SQL("select domain, stream, partition, cursor, kind, "
                                        "updated_at from {}.sync_checkpoints").format(s))}
    last_runs = {(r[0], r[1], r[2]): r[3:] for r in conn.execute(sql.SQL("""
        select distinct on (domain, stream, partition) domain, stream, partition, id,
               invocation, trigger, command, status, started_at, finished_at, records, error
        from {}.sync_runs order by domain, stream, partition, id desc""").format(s))}
    last_ok = dict(((d, st, p), finished) for d, st, p, finished in conn.execute(sql.SQL("""
        select domain, stream, partition, max(finished_at) from {}.sync_runs
        where status = 'ok' group by 1, 2, 3""").format(s)))
    letters = dict(((d, st, p), n) for d, st, p, n in conn.execute(sql.SQL(
        "select domain, stream, partition, count(*) from {}.dead_letters group by 1, 2, 3"
    ).format(s)))
    streams = []
    for key in sorted(set(checkpoints) | set(last_runs)):
        domain, stream, partition = key
        cursor, kind, moved = checkpoints.get(key, (None, None, None))
        run = last_runs.get(key)
        streams.append({
            "domain": domain, "stream": stream, "partition": partition, "cursor_kind": kind,
            "checkpoint": cursor, "checkpoint_moved_at": _iso(moved),
            "indexed_on": (cursor or {}).get("indexed_on"),
            "hq_server": (cursor or {}).get("server"),
            "last_run": None if run is None else {
                "id": run[0], "invocation": run[1], "trigger": run[2], "command": run[3],
                "status": run[4], "started_at": _iso(run[5]), "finished_at": _iso(run[6]),
                "records": run[7], "error": run[8]},
            "last_success_at": _iso(last_ok.get(key)),
            "dead_letters": letters.get(key, 0),
        })
    return {"version": SCHEMA_VERSION, "schema": schema, "streams": streams,
            "dead_letters": sum(letters.values())}


def ask_hq(entry: dict, client, case_api: str) -> None:
    """Add what HQ has newer than the checkpoint: `hq_newer` (records at or after it) and
    `hq_newest_indexed_on`, from one request with limit=1."""
    stream, domain = entry["stream"], entry["domain"]
    if stream not in ("cases", "forms") or (stream == "cases" and case_api == "v2"):
        return
    since = parse_hq_datetime(entry.get("indexed_on"))
    params: dict[str, Any] = {"limit": 1, "order_by": "-indexed_on"}
    if stream == "forms":
        params["include_archived"] = "true"
    if since is not None:
        params["indexed_on_start"] = format_v05(since)
    resource = "case" if stream == "cases" else "form"
    doc = client.get_json(f"/a/{domain}/api/v0.5/{resource}/", params)
    body = doc.data if isinstance(doc.data, dict) else {}
    objects = body.get("objects") or []
    entry["hq_newer"] = (body.get("meta") or {}).get("total_count")
    newest = objects[0].get("indexed_on") if objects and isinstance(objects[0], dict) else None
    entry["hq_newest_indexed_on"] = newest
    newest_at, since_at = parse_hq_datetime(newest), since
    entry["behind_seconds"] = (round((newest_at - since_at).total_seconds(), 3)
                               if newest_at and since_at else None)


def render_text(report: dict) -> str:
    if not report["streams"]:
        return "no checkpoints yet: nothing has been synced into this warehouse"
    lines = []
    for e in report["streams"]:
        run = e["last_run"] or {}
        stream = f"{e['stream']}[{e['partition']}]" if e.get("partition") else e["stream"]
        line = (f"{e['domain']}\t{stream}\tindexed_on {e['indexed_on'] or '-'}\t"
                f"last run {run.get('status', '-')} {run.get('finished_at') or run.get('started_at') or ''}"
                f"\tlast success {e['last_success_at'] or 'never'}")
        if e["dead_letters"]:
            line += f"\t{e['dead_letters']} dead letter(s)"
        if e.get("hq_newer") is not None:
            line += f"\tHQ has {e['hq_newer']} newer"
        if run.get("status") == "failed" and run.get("error"):
            line += f"\terror: {run['error'][:200]}"
        lines.append(line)
    return "\n".join(lines)
