"""`/_sim/...`: drive a standalone simulator over HTTP (loopback clients only, no auth).

    POST /_sim/faults   {"kind": "503", "count": 2, "resource": "case", "retry_after": 5}
                        {"random": {"rate": 0.2, "kinds": ["500", "reset"], "seed": 1}}
                        {"clear": true}          (or DELETE /_sim/faults)
    POST /_sim/mutate   {"action": "add_cases", "domain": "demo", "n": 5, "case_type": "patient"}
                        (optional "owner_id", "properties"; add_forms takes "xmlns")
                        actions: add_cases, update_cases, close_cases, add_forms, archive_forms,
                        unarchive_forms, delete_cases, delete_forms, add_ties, add_late,
                        touch_cases, set_clock, clear_requests,
                        {"action": "set_case_owner", "case_ids": [...], "owner_id": "..."}
                        {"action": "set_case_index", "case_id": "...", "identifier": "parent",
                         "referenced_id": "..." or null, "case_type": "", "relationship":
                         "child"}
                        logins, the export and the restore (domain optional where it applies):
                        {"action": "add_web_login", "username": "...", "password": "...",
                         "api_key": null, "domains": null}
                        {"action": "add_lookup_table", "tag": "clinics", "fields": ["name"],
                         "items": [{"name": "A"}], "users": null}
                        {"action": "set_export_limit", "max_bytes": 1000000}
                        {"action": "set_digest_nonce_lifetime", "seconds": 300}
                        and HQ at its worst:
                        {"action": "set_replicas", "n": 3, "seed": 1}
                        {"action": "reindex_during_reads", "resource": "form",
                         "after_requests": 2, "count": 1, "seed": 0}   (domain optional)
                        {"action": "reindexed_ids"}
                        {"action": "deprecate_case_type", "case_type": "contact",
                         "deprecated": true}
                        {"action": "set_rate_limit", "enabled": true, "users": 8, "scale": 1.0,
                         "retry_after_on_v05": false}
                        reference data (domain optional; the rest are the keyword
                        arguments of the HQSimulator method of the same name):
                        {"action": "add_mobile_worker", "username": "chw10",
                         "first_name": "Ana", "location_ids": ["..."], "groups": ["..."]}
                        {"action": "update_mobile_worker", "user_id": "...",
                         "user_data": {"cadre": "CHA"}}
                        deactivate_/activate_/delete_/restore_mobile_worker {"user_id"},
                        add_web_user {"username", "role", ...}, update_web_user,
                        deactivate_/activate_/delete_/restore_web_user {"user_id"},
                        add_group {"name", "users", "case_sharing", ...}, update_group,
                        add_group_members / remove_group_members {"group_id", "user_ids"},
                        delete_group / restore_group {"group_id"},
                        add_location {"name", "location_type", "parent_id", ...},
                        update_location {"location_id", ...}, move_location
                        {"location_id", "parent_id"}, archive_/unarchive_/delete_location
                        {"location_id"}
    GET  /_sim/stats    record counts per domain (reference data included), clock, requests
                        served, faults pending, replicas, re-indexed ids, rate limit settings
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from etl.simulator.api import Response, error

if TYPE_CHECKING:
    from etl.simulator.server import HQSimulator


def handle(sim: "HQSimulator", method: str, path: str, body: bytes, client: str) -> Response:
    if not (client.startswith("127.") or client in ("::1", "localhost")):
        return error(403, "the control API only answers loopback clients")
    name = path[len("/_sim/"):].strip("/")
    try:
        payload = json.loads(body) if body.strip() else {}
        if not isinstance(payload, dict):
            raise ValueError("the body must be a JSON object")
        if name == "stats" and method == "GET":
            return _ok(sim.stats())
        if name == "faults" and method == "DELETE":
            sim.faults.clear()
            return _ok({"cleared": True})
        if name == "faults" and method == "POST":
            return _ok(_faults(sim, payload))
        if name == "mutate" and method == "POST":
            return _ok({"result": _mutate(sim, payload)})
    except (ValueError, KeyError, TypeError) as exc:
        return error(400, f"{type(exc).__name__}: {exc}")
    return error(404, f"no control endpoint {method} {path}")


def _ok(data: Any) -> Response:
    return Response(200, json.dumps(data, default=str).encode())


def _faults(sim: "HQSimulator", payload: dict) -> dict:
    if payload.get("clear"):
        sim.faults.clear()
        return {"cleared": True}
    if "random" in payload:
        spec = payload["random"]
        sim.faults.set_random(float(spec["rate"]), list(spec["kinds"]), int(spec.get("seed", 0)))
        return {"random": spec}
    options = dict(payload)
    kind = str(options.pop("kind"))
    count = int(options.pop("count", 1))
    resource = options.pop("resource", None)
    sim.faults.add(kind, count=count, resource=resource, **options)
    return {"queued": len(sim.faults.pending())}


REFERENCE_ACTIONS = frozenset({
    "add_mobile_worker", "update_mobile_worker", "deactivate_mobile_worker",
    "activate_mobile_worker", "delete_mobile_worker", "restore_mobile_worker",
    "add_web_user", "update_web_user", "deactivate_web_user", "activate_web_user",
    "delete_web_user", "restore_web_user",
    "add_group", "update_group", "add_group_members", "remove_group_members", "delete_group",
    "restore_group",
    "add_location", "update_location", "move_location", "archive_location",
    "unarchive_location", "delete_location",
})


def _mutate(sim: "HQSimulator", payload: dict) -> Any:
    args = dict(payload)
    action = args.pop("action")
    domain = args.pop("domain", None) or sim.default_domain
    if action in REFERENCE_ACTIONS:
        return getattr(sim, action)(domain, **args)
    if action == "add_cases":
        return sim.add_cases(domain, int(args.get("n", 1)), args.get("case_type", "patient"),
                             args.get("owner_id"), args.get("properties"))
    if action in ("set_case_owner", "set_case_index", "add_lookup_table"):
        return getattr(sim, action)(domain, **args)
    if action == "add_web_login":
        return sim.add_web_login(**args)
    if action == "set_export_limit":
        return sim.set_export_limit(int(args["max_bytes"]))
    if action == "set_digest_nonce_lifetime":
        return sim.set_digest_nonce_lifetime(float(args["seconds"]))
    if action == "update_cases":
        return sim.update_cases(domain, list(args["case_ids"]), args.get("properties"))
    if action == "close_cases":
        return sim.close_cases(domain, list(args["case_ids"]))
    if action == "add_forms":
        return sim.add_forms(domain, int(args.get("n", 1)), args.get("xmlns"))
    if action in ("archive_forms", "unarchive_forms"):
        return getattr(sim, action)(domain, list(args["form_ids"]))
    if action in ("delete_cases", "delete_forms"):
        return getattr(sim, action)(domain, list(args["ids"]))
    if action == "add_ties":
        moment = args.get("indexed_on")
        return sim.add_ties(domain, args.get("resource", "case"), int(args.get("n", 1)),
                            datetime.fromisoformat(moment) if moment else None)
    if action == "add_late":
        return sim.add_late(domain, args.get("resource", "case"), int(args.get("n", 1)),
                            timedelta(seconds=float(args.get("lag_seconds", 60))))
    if action == "touch_cases":
        return sim.touch_cases(domain, list(args["case_ids"]))
    if action == "set_replicas":
        sim.set_replicas(int(args["n"]), int(args.get("seed", 0)))
        return sim.replicas
    if action == "reindex_during_reads":
        return sim.reindex_during_reads(args["resource"], int(args.get("after_requests", 1)),
                                        int(args.get("count", 1)), payload.get("domain"),
                                        int(args.get("seed", 0)))
    if action == "reindexed_ids":
        return sim.reindexed_ids
    if action == "deprecate_case_type":
        return sim.deprecate_case_type(domain, args["case_type"],
                                       bool(args.get("deprecated", True)))
    if action == "set_rate_limit":
        users = args.get("users")
        sim.set_rate_limit(bool(args.get("enabled", True)),
                           None if users is None else int(users),
                           float(args.get("scale", 1.0)), bool(args.get("retry_after_on_v05")))
        return sim.rate_limiter.settings()
    if action == "set_clock":
        sim.set_clock(datetime.fromisoformat(args["clock"]))
        return sim.now().isoformat()
    if action == "clear_requests":
        sim.clear_requests()
        return None
    raise ValueError(f"unknown action {action!r}")
