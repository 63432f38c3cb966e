"""HQ's API-key authentication (corehq/apps/domain/auth.py), for configured users only."""

from __future__ import annotations

from typing import Iterable, Mapping

# username -> (api key, domains the user may read; None = every domain)
Users = Mapping[str, tuple[str, "Iterable[str] | None"]]


def authenticate(users: Users, authorization: str | None, params: list[tuple[str, str]],
                 allow_query_credentials: bool) -> str | None:
    """The authenticated username, or None.

    `Authorization: ApiKey <username>:<key>` (scheme matched case-insensitively, split at the
    first space then the first colon). Without that header, tastypie resources also take
    `?username=...&api_key=...`; Case API v2 does not.
    """
    if authorization:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "apikey":
            return None  # Basic/Digest need passwords, which the simulator's users do not have
        username, _, key = credentials.strip().partition(":")
        return username if _valid(users, username, key) else None
    if allow_query_credentials:
        last = dict(params)
        username, key = last.get("username"), last.get("api_key")
        if username and key and _valid(users, username, key):
            return username
    return None


def _valid(users: Users, username: str, key: str) -> bool:
    entry = users.get(username)
    return entry is not None and bool(key) and entry[0] == key


def may_access(users: Users, username: str, domain: str) -> bool:
    domains = users[username][1]
    return domains is None or domain in set(domains)
