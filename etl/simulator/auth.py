"""HQ's authentication (corehq/apps/domain/auth.py), for configured accounts only.

* `Authorization: ApiKey <username>:<key>`: the configured API users (`users`).
* `Authorization: Basic ...` and `Authorization: Digest ...` (digest.py): a login with a
  password. On the data APIs and the export API that is a *web login* (an API user that has a
  password, `HQSimulator.add_web_login`); on the OTA restore it is a *mobile worker*
  (`name@<domain>.commcarehq.org` and the worker's password).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from etl.simulator import digest
from etl.simulator.digest import NonceBook, Verdict

# username -> (api key, domains the user may read; None = every domain)
Users = Mapping[str, tuple[str, "Iterable[str] | None"]]
# A login name -> (the account's stored name, its password), or None for no such login.
PasswordOf = Callable[[str], "tuple[str, str] | None"]


@dataclass(frozen=True)
class Outcome:
    """What an `Authorization` header proved."""

    username: str | None  # the account, as stored; None: nothing proven
    scheme: str | None = None  # "apikey", "basic", "digest", or None (absent or unknown)
    stale: bool = False  # Digest: the right password, to a nonce that has expired


def scheme_of(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme = authorization.strip().partition(" ")[0].lower()
    return scheme if scheme in ("apikey", "basic", "digest") else None


def authenticate(users: Users, authorization: str | None, params: list[tuple[str, str]],
                 allow_query_credentials: bool, *, passwords: Mapping[str, str] | None = None,
                 nonces: NonceBook | None = None, method: str = "GET",
                 uri: str = "") -> str | None:
    """The authenticated username, or None (see `identify`)."""
    return identify(users, authorization, params, allow_query_credentials, passwords=passwords,
                    nonces=nonces, method=method, uri=uri).username


def identify(users: Users, authorization: str | None, params: list[tuple[str, str]],
             allow_query_credentials: bool, *, passwords: Mapping[str, str] | None = None,
             nonces: NonceBook | None = None, method: str = "GET", uri: str = "") -> Outcome:
    """Who the data APIs take the request to be from.

    `Authorization: ApiKey <username>:<key>` (scheme matched case-insensitively, split at the
    first space then the first colon). Without that header, tastypie resources also take
    `?username=...&api_key=...`; Case API v2 does not. Basic and Digest take a web login's
    password (`passwords`: username -> password; without it they never succeed).
    """
    scheme = scheme_of(authorization)
    if scheme == "apikey":
        credentials = authorization.strip().partition(" ")[2]  # type: ignore[union-attr]
        username, _, key = credentials.strip().partition(":")
        return Outcome(username if _valid(users, username, key) else None, scheme)
    if scheme in ("basic", "digest"):
        if passwords is None:
            return Outcome(None, scheme)
        return check_password(authorization or "", method, uri,
                              web_password_of(users, passwords), nonces)
    if authorization:
        return Outcome(None)  # a scheme HQ does not take here
    if allow_query_credentials:
        last = dict(params)
        username, key = last.get("username"), last.get("api_key")
        if username and key and _valid(users, username, key):
            return Outcome(username, "apikey")
    return Outcome(None)


def check_password(authorization: str, method: str, uri: str, password_of: PasswordOf,
                   nonces: NonceBook | None) -> Outcome:
    """A Basic or Digest header checked against `password_of`."""
    scheme = scheme_of(authorization)
    if scheme == "basic":
        login = _basic(authorization)
        if login is None:
            return Outcome(None, scheme)
        account = password_of(login[0])
        ok = account is not None and bool(login[1]) and hmac.compare_digest(
            account[1].encode("utf-8"), login[1].encode("utf-8"))
        return Outcome(account[0] if ok else None, scheme)  # type: ignore[index]
    if scheme == "digest" and nonces is not None:
        fields = digest.parse(authorization) or {}
        account = password_of(fields.get("username") or "")
        if account is None:
            return Outcome(None, scheme)
        verdict = nonces.verify(fields, method, uri, account[1])
        return Outcome(account[0] if verdict is Verdict.OK else None, scheme,
                       verdict is Verdict.STALE)
    return Outcome(None, scheme)


def _basic(authorization: str) -> tuple[str, str] | None:
    token = authorization.strip().partition(" ")[2].strip()
    try:
        raw = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # HQ falls back to latin-1 as well
        text = raw.decode("latin-1")
    username, sep, password = text.partition(":")
    return (username, password) if sep else None


def web_password_of(users: Users, passwords: Mapping[str, str]) -> PasswordOf:
    """Web logins: the API users that have a password (usernames match case-insensitively,
    as HQ lower-cases them)."""
    def lookup(name: str) -> tuple[str, str] | None:
        if name in passwords and name in users:
            return name, passwords[name]
        lowered = name.lower()
        for stored, password in passwords.items():
            if stored.lower() == lowered and stored in users:
                return stored, password
        return None
    return lookup


def _valid(users: Users, username: str, key: str) -> bool:
    entry = users.get(username)
    return entry is not None and bool(key) and entry[0] == key


def may_access(users: Users, username: str, domain: str) -> bool:
    domains = users[username][1]
    return domains is None or domain in set(domains)
