"""Standard Webhooks signing, and URLs made safe to log (the `webhook` adapter uses both).

The secret is read from the environment once, when the destination is built, so a missing or
malformed secret stops startup (or a reload) instead of failing every send; it is kept only
as decoded bytes and never appears in a log line, an error or a dead letter.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

import httpx

from journeyd.delivery.retry import (
    DestinationConfigError,
)

SECRET_PREFIX = "whsec_"
_ERROR_BODY_CHARS = 200


def load_secret(name: str, secret_env: str, environ: Mapping[str, str]) -> bytes:
    """The HMAC key behind `whsec_<base64>`; errors name the variable, never its value."""
    raw = environ.get(secret_env)
    if raw is None or not raw.strip():
        raise DestinationConfigError(
            f"destination {name}: environment variable {secret_env} (secret_env) is not set"
        )
    text = raw.strip()
    if not text.startswith(SECRET_PREFIX):
        raise DestinationConfigError(
            f"destination {name}: {secret_env} must hold a Standard Webhooks secret "
            f"({SECRET_PREFIX}<base64>)"
        )
    encoded = text.removeprefix(SECRET_PREFIX)
    try:
        # Reference libraries tolerate missing padding; so do we.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise DestinationConfigError(
            f"destination {name}: {secret_env} is not valid base64 after {SECRET_PREFIX}"
        )
    return key


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` over the exact bytes sent, as the spec requires."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def public_url(url: str) -> str:
    """The URL without user:password, for logs and dead letters."""
    try:
        return str(httpx.URL(url).copy_with(username=None, password=None))
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<invalid url>"
