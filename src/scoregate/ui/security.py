"""Sessions, CSRF tokens and the response headers every page carries.

A session is the caller's scoregate token, encrypted and authenticated (Fernet) in an
HttpOnly, SameSite=Strict cookie, so the server keeps no session table and every
request is checked again against the registry (expiry, revocation, disabled users). The
cookie is useless against the API: only this UI's key decrypts it. CSRF: a random
``sg_csrf`` cookie, and in every form its HMAC under the same key (a forged form from
another site can read neither).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from starlette.requests import Request
from starlette.responses import Response

from scoregate.files import fsync_dir, open_private, private_dir

SESSION_COOKIE = "sg_session"
CSRF_COOKIE = "sg_csrf"
CSRF_FIELD = "csrf"
#: A session lasts at most this long; the token's own expiry can end it sooner.
SESSION_SECONDS = 12 * 3600
KEY_FILE = "ui-session.key"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; frame-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'self'"
)
#: Stored reports are shown in a sandboxed frame: no script at all, their own inline styles.
REPORT_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; frame-ancestors 'self'"


def load_key(home: Path) -> bytes:
    """The UI's key, created 0600 under the home on first use (every process of one home shares it)."""
    path = home / KEY_FILE
    if not path.exists():
        private_dir(home)
        key = Fernet.generate_key()
        try:
            fd = open_private(path)
        except FileExistsError:  # another process made it meanwhile
            pass
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(key)
                handle.flush()
                os.fsync(handle.fileno())
            fsync_dir(home)
    return path.read_bytes().strip()


class Sessions:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        self._mac_key = hashlib.sha256(b"scoregate-ui-csrf" + key).digest()

    def token_of(self, request: Request) -> str | None:
        """The scoregate token of the request's session, or None (absent, forged or expired)."""
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        try:
            return self._fernet.decrypt(cookie.encode(), ttl=SESSION_SECONDS).decode()
        except (InvalidToken, UnicodeError, ValueError):
            return None

    def open(self, response: Response, request: Request, token: str) -> None:
        value = self._fernet.encrypt(token.encode()).decode()
        _cookie(response, request, SESSION_COOKIE, value, SESSION_SECONDS)

    def close(self, response: Response, request: Request) -> None:
        response.delete_cookie(SESSION_COOKIE, path=_path(request), httponly=True, samesite="strict")

    # -- CSRF ------------------------------------------------------------------------------------

    def csrf_seed(self, request: Request) -> str:
        """The request's CSRF cookie value, or a new one (set on the response by ``remember``)."""
        seed = request.cookies.get(CSRF_COOKIE)
        if not seed or len(seed) > 64:
            seed = request.state.__dict__.setdefault("new_csrf", secrets.token_urlsafe(24))
        return seed

    def csrf_token(self, request: Request) -> str:
        return hmac.new(self._mac_key, self.csrf_seed(request).encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, request: Request, submitted: object) -> bool:
        seed = request.cookies.get(CSRF_COOKIE)
        if not seed or not isinstance(submitted, str):
            return False
        expected = hmac.new(self._mac_key, seed.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, submitted)

    def remember(self, request: Request, response: Response) -> None:
        """Set the CSRF cookie if this request minted one."""
        seed = request.state.__dict__.get("new_csrf")
        if seed:
            _cookie(response, request, CSRF_COOKIE, seed, None)


def _path(request: Request) -> str:
    return (request.scope.get("root_path") or "") + "/" if request.scope.get("root_path") else "/"


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=_path(request),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def security_headers(response: Response, *, report: bool = False) -> None:
    response.headers["content-security-policy"] = REPORT_POLICY if report else CONTENT_SECURITY_POLICY
    response.headers["x-content-type-options"] = "nosniff"
    response.headers["referrer-policy"] = "same-origin"
    response.headers["x-frame-options"] = "SAMEORIGIN"
    response.headers.setdefault("cache-control", "no-store")
