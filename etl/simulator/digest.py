"""HTTP Digest authentication as HQ's django-digest speaks it (RFC 2617 / RFC 7616 with MD5 and
`qop="auth"`).

The server hands out a random nonce and opaque with each 401 challenge and remembers them: a
client's answer must quote a nonce this book issued (under the same realm and opaque), the URI it
requested, a nonce count greater than the last one it used with that nonce (django-digest
enforces nonce counts, so a replayed header fails), and the MD5 response computed from the
password. A nonce older than its lifetime is stale: the right answer to it still gets a fresh
401, whose challenge says `stale="true"`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Callable

REALM = "DJANGO"  # django-digest's default `DIGEST_REALM`, which HQ keeps
NONCE_LIFETIME = 300.0  # seconds (django-digest's DIGEST_NONCE_TIMEOUT_IN_SECONDS)
_MAX_NONCES = 100_000
_FIELD = re.compile(r'([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


class Verdict(Enum):
    OK = "ok"
    STALE = "stale"  # the right password, but the nonce has expired
    BAD = "bad"


@dataclass
class _Issued:
    realm: str
    opaque: str
    issued: float
    last_nc: int = 0


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def expected_response(fields: dict[str, str], method: str, password: str) -> str:
    """The `response` a client that knows `password` sends with these header fields."""
    ha1 = md5_hex(f"{fields.get('username', '')}:{fields.get('realm', '')}:{password}")
    if (fields.get("algorithm") or "MD5").upper() == "MD5-SESS":
        ha1 = md5_hex(f"{ha1}:{fields.get('nonce', '')}:{fields.get('cnonce', '')}")
    ha2 = md5_hex(f"{method}:{fields.get('uri', '')}")
    return md5_hex(f"{ha1}:{fields.get('nonce', '')}:{fields.get('nc', '')}:"
                   f"{fields.get('cnonce', '')}:{fields.get('qop', '')}:{ha2}")


def parse(authorization: str) -> dict[str, str] | None:
    """The fields of `Digest k="v", k=v, ...`; None for another scheme."""
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    fields = {}
    for match in _FIELD.finditer(rest):
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        fields[match.group(1).lower()] = value
    return fields


class NonceBook:
    """The nonces a simulator has issued, and the last nonce count each was answered with."""

    def __init__(self, lifetime: float = NONCE_LIFETIME,
                 clock: Callable[[], float] = time.monotonic):
        self.lifetime = float(lifetime)
        self._clock = clock
        self._lock = threading.Lock()
        self._issued: OrderedDict[str, _Issued] = OrderedDict()

    def challenge(self, realm: str = REALM, stale: bool = False) -> str:
        """A fresh `WWW-Authenticate` value: `Digest realm=..., nonce=..., qop="auth", ...`."""
        nonce, opaque = secrets.token_hex(16), secrets.token_hex(16)
        with self._lock:
            self._issued[nonce] = _Issued(realm, opaque, self._clock())
            while len(self._issued) > _MAX_NONCES:
                self._issued.popitem(last=False)
        return (f'Digest realm="{realm}", nonce="{nonce}", qop="auth", opaque="{opaque}", '
                f'algorithm="MD5", stale="{"true" if stale else "false"}"')

    def verify(self, fields: dict[str, str], method: str, uri: str, password: str) -> Verdict:
        """Check a client's Digest answer for a request of `method` to `uri` (the request
        target exactly as sent: path and query)."""
        if fields.get("qop") != "auth" or (fields.get("algorithm") or "MD5").upper() not in (
                "MD5", "MD5-SESS"):
            return Verdict.BAD
        try:
            nc = int(fields.get("nc") or "", 16)
        except ValueError:
            return Verdict.BAD
        if fields.get("uri") != uri or not fields.get("cnonce"):
            return Verdict.BAD
        with self._lock:
            issued = self._issued.get(fields.get("nonce") or "")
            if (issued is None or issued.realm != fields.get("realm")
                    or issued.opaque != (fields.get("opaque") or "")):
                return Verdict.BAD
            if not hmac.compare_digest(expected_response(fields, method, password),
                                       (fields.get("response") or "").lower()):
                return Verdict.BAD
            if self._clock() - issued.issued > self.lifetime:
                return Verdict.STALE
            if nc <= issued.last_nc:  # a replayed (or reordered) request
                return Verdict.BAD
            issued.last_nc = nc
        return Verdict.OK
