"""Who may read the user endpoint: a bearer token, compared in constant time.

``GET /users/{id}/`` answers with one person's features, reasons and purchase
history summary: personal data. With ``RETENTION_API_TOKEN`` set, a request must
carry ``Authorization: Bearer <token>``; the token is never logged. ``/metrics``
stays open, as Prometheus expects: no metric label carries a user id.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket

from retention_model.errors import RetentionError
from streams.settings import Settings

__all__ = ["authorised", "check_api_exposure", "is_loopback"]


def authorised(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header value carries ``token`` (always True when no token is set)."""
    if not token:
        return True
    if authorization is None:
        return False
    scheme, _, presented = authorization.partition(" ")
    # compare_digest on equal-length bytes is constant time whatever the mismatch.
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only listens on this machine."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def check_api_exposure(settings: Settings) -> None:
    """Refuse to serve personal data to a network without a token, unless told it is meant."""
    if settings.state_api != "on" or settings.api_token or settings.api_public == "true":
        return
    if is_loopback(settings.web_host):
        return
    msg = (
        f"RETENTION_WEB_HOST={settings.web_host} would serve /users/... (personal data) to the network without "
        "a token: set RETENTION_API_TOKEN (or RETENTION_API_TOKEN_FILE), bind 127.0.0.1, turn the endpoint off "
        "with RETENTION_STATE_API=off, or set RETENTION_API_PUBLIC=true if that is meant"
    )
    raise RetentionError(msg)
