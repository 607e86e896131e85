"""Who may see /ui: HTTP basic auth from SMSQ_UI_BASIC_AUTH, and CSRF tokens for its forms.

Checked by the edge middleware (`worker.edge.guard.EdgeGuard`) before any route
runs or any body is read. Unset: /ui answers 404, as if it were not there.
The user name and the password are both compared in constant time, over bytes,
every time (a wrong name costs what a wrong password costs).

A browser sends basic credentials with every request to the site, including a
form posted from another site, so each POST also carries a token
(HMAC-SHA256 of the user and an issue time, keyed by a sub-key derived from
SMSQ_UI_BASIC_AUTH) and must come from the dashboard's own origin
(`Sec-Fetch-Site`, `Origin`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from urllib.parse import urlsplit

from producer.settings import Settings

UI_PREFIX = "/ui"
USER_STATE = "smsq_ui_user"
REALM = 'Basic realm="smsq dashboard", charset="UTF-8"'
TOKEN_SECONDS = 12 * 3600


def is_ui_path(path: str) -> bool:
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


def configured(settings: Settings) -> tuple[bytes, bytes] | None:
    """(user, password) as bytes, or None when the dashboard is off."""
    raw = settings.ui_basic_auth.get_secret_value() if settings.ui_basic_auth else ""
    user, sep, password = raw.partition(":")
    if not (sep and user and password):
        return None
    return user.encode(), password.encode()


def basic_credentials(header: bytes | None) -> tuple[bytes, bytes] | None:
    """(user, password) of `Authorization: Basic ...`, as bytes; None if absent or broken."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(rest.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


def check(header: bytes | None, expected: tuple[bytes, bytes]) -> str | None:
    """The user name when `header` carries the configured credentials, else None."""
    given = basic_credentials(header) or (b"", b"")
    user_ok = hmac.compare_digest(given[0], expected[0])
    password_ok = hmac.compare_digest(given[1], expected[1])
    if user_ok and password_ok:
        return expected[0].decode("utf-8", "replace")
    return None


def caller(settings: Settings, header: bytes | None) -> tuple[int, str] | str:
    """The UI user, or (status, error): 404 when the dashboard is off, 401 otherwise."""
    expected = configured(settings)
    if expected is None:
        return 404, "Not Found"
    user = check(header, expected)
    if user is None:
        return 401, "the dashboard needs the user and password of SMSQ_UI_BASIC_AUTH"
    return user


# -- CSRF ---------------------------------------------------------------------------
def _key(settings: Settings) -> bytes:
    """A sub-key of SMSQ_UI_BASIC_AUTH for tokens (one secret, one job: labelled)."""
    secret = settings.ui_basic_auth.get_secret_value() if settings.ui_basic_auth else ""
    return hmac.new(secret.encode(), b"smsq ui csrf v1", hashlib.sha256).digest()


def _mac(settings: Settings, user: str, issued: int) -> str:
    message = f"{user}\n{issued}".encode()
    return hmac.new(_key(settings), message, hashlib.sha256).hexdigest()


def csrf_token(settings: Settings, user: str, now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    return f"{issued}.{_mac(settings, user, issued)}"


def csrf_ok(settings: Settings, user: str, token: str | None, now: float | None = None) -> bool:
    """A token this dashboard issued to `user` in the last TOKEN_SECONDS."""
    issued_text, _, mac = (token or "").partition(".")
    if not issued_text.isdigit() or not mac:
        return False
    issued = int(issued_text)
    moment = now if now is not None else time.time()
    if not (moment - TOKEN_SECONDS <= issued <= moment + 60):
        return False
    return hmac.compare_digest(mac.encode(), _mac(settings, user, issued).encode())


def same_origin(headers: dict[str, str]) -> bool:
    """Whether a POST comes from the dashboard's own pages: `Sec-Fetch-Site` (modern
    browsers) says so, or `Origin` names this host; a client that sends neither (curl)
    is judged by its token alone."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    return urlsplit(origin).netloc.lower() == headers.get("host", "").lower()
