"""Browser sessions of the console: a signed cookie made from a bearer token.

Signing in posts a token of ``SAGA_API_TOKENS`` once; the answer sets the cookie
``saga_console`` (HttpOnly, SameSite=Strict, Path=/ui/, Secure over HTTPS). The cookie
holds a random nonce, an expiry and an HMAC-SHA256 of both *keyed with the token*, never
the token itself. A request's cookie is checked against every configured token in
constant time, so sessions need no server-side table, work across API replicas, and
end as soon as their token is removed from the configuration.

Every session has its own CSRF token, an HMAC of the nonce under the same key: pages
put it in a hidden form field, and every POST must send it back (form field ``csrf``
or header ``X-CSRF-Token``). A cross-site form can neither read it nor, thanks to
SameSite=Strict, send the cookie.

Without configured tokens the API is loopback-only and everybody is the ``local``
operator; sessions are then keyed with a random secret of the process, only so that
the CSRF check still applies.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from hashlib import sha256

from saga.access import ANONYMOUS, ApiConfig, Principal

COOKIE = "saga_console"
"""Name of the session cookie."""

SESSION_TTL_S = 8 * 3600
"""How long a session lasts after signing in."""


@dataclass(frozen=True, kw_only=True)
class Session:
    """A signed-in browser."""

    principal: Principal
    """Who it is (name and role, as in the API)."""
    csrf: str
    """The CSRF token every POST of this session must carry."""
    expires_at: int
    """Unix time when the session ends."""


def _mac(key: bytes, *parts: str) -> str:
    return hmac.new(key, "|".join(parts).encode(), sha256).hexdigest()


class Sessions:
    """Makes and checks session cookies for one :class:`~saga.api.ApiConfig`."""

    def __init__(self, config: ApiConfig, *, ttl_s: int = SESSION_TTL_S) -> None:
        self.config = config
        self.ttl_s = ttl_s
        self._keys: list[tuple[bytes, Principal]] = (
            [(token.encode(), p) for token, p in config.tokens.items()]
            if config.auth_enabled
            else [(secrets.token_bytes(32), ANONYMOUS)]
        )

    @property
    def needs_sign_in(self) -> bool:
        """Whether a browser must present a token (tokens are configured)."""
        return self.config.auth_enabled

    def sign_in(self, token: str | None) -> str | None:
        """The cookie value of a new session for ``token``; ``None`` if it is unknown.

        Without configured tokens ``token`` is ignored and the session is ``local``'s.
        """
        if not self.config.auth_enabled:
            key: bytes | None = self._keys[0][0]
        else:
            given = (token or "").strip().encode()
            key = None
            for candidate, _ in self._keys:
                if hmac.compare_digest(candidate, given):
                    key = candidate
        if key is None:
            return None
        nonce = secrets.token_urlsafe(18)
        expires = str(int(time.time()) + self.ttl_s)
        return f"{nonce}.{expires}.{_mac(key, 'session', nonce, expires)}"

    def session(self, cookie: str | None) -> Session | None:
        """The session a cookie stands for, or ``None`` (missing, forged or expired)."""
        if not cookie:
            return None
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        nonce, expires, mac = parts
        if int(expires) < time.time():
            return None
        found: tuple[bytes, Principal] | None = None
        for key, principal in self._keys:
            if hmac.compare_digest(_mac(key, "session", nonce, expires), mac):
                found = (key, principal)
        if found is None:
            return None
        key, principal = found
        return Session(
            principal=principal,
            csrf=_mac(key, "csrf", nonce)[:40],
            expires_at=int(expires),
        )

    @staticmethod
    def csrf_ok(session: Session, presented: str | None) -> bool:
        """Whether ``presented`` is the session's CSRF token."""
        return bool(presented) and hmac.compare_digest(session.csrf, presented or "")
