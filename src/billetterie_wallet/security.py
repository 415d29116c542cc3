"""Signed values for the spectator app: the session cookie and the CSRF check.

Session: ``<spectator id>.<issued at, unix>.<HMAC-SHA256>``, HttpOnly, SameSite=Lax, valid for
``session_lifetime_seconds``. CSRF: a random ``bw_csrf`` cookie that every form repeats in a
hidden ``csrf_token`` field (JSON calls: the ``X-CSRF-Token`` header); a cross-site page can
neither read the cookie nor set it, so it cannot repeat it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime

SESSION_COOKIE = "bw_session"
CSRF_COOKIE = "bw_csrf"
DEVICE_COOKIE = "bw_device"
DEVICE_HEADER = "x-device-id"
DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def _mac(key: str, message: str) -> str:
    digest = hmac.new(key.encode(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def session_value(key: str, spectator_id: int, now: datetime) -> str:
    body = f"{spectator_id}.{int(now.timestamp())}"
    return f"{body}.{_mac(key, 'session:' + body)}"


def read_session(key: str, value: str | None, now: datetime, lifetime: int) -> int | None:
    if not value or value.count(".") != 2:
        return None
    spectator, issued, signature = value.split(".")
    if not (spectator.isdigit() and issued.isdigit()):
        return None
    if not hmac.compare_digest(_mac(key, f"session:{spectator}.{issued}"), signature):
        return None
    if not 0 <= now.timestamp() - int(issued) <= lifetime:
        return None
    return int(spectator)


def same_token(cookie: str | None, submitted: str | None) -> bool:
    return bool(cookie) and bool(submitted) and hmac.compare_digest(str(cookie), str(submitted))
