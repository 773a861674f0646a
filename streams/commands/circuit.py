"""``retention circuit``: read or close a worker's intervention circuit breaker over its web port.

The worker's API token (``RETENTION_API_TOKEN``, when set) goes along as a bearer token.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from typing import Any

from retention_model.errors import RetentionError
from streams.settings import Settings, add_settings_flags

__all__ = ["register"]


def _call(url: str, *, close: bool, timeout_s: float, token: str = "") -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(
        url, data=b"{}" if close else None, method="POST" if close else "GET", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            refused = " (the one set was refused)" if token else ""
            msg = (
                f"the worker at {url} wants its API token: set RETENTION_API_TOKEN or RETENTION_API_TOKEN_FILE{refused}"
            )
            raise RetentionError(msg) from None
        msg = f"the worker at {url} answered HTTP {exc.code} {exc.reason}"
        raise RetentionError(msg) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        msg = f"no worker answered at {url} ({reason}); is it running, and is --url its web host and port?"
        raise RetentionError(msg) from None


def cmd_circuit(args: argparse.Namespace) -> int:
    """Print the breaker's state, closing it first with ``close``."""
    overrides = {k: v for k, v in vars(args).items() if k in Settings.__dataclass_fields__}
    settings = Settings.load(os.environ, overrides)
    url = args.url or f"http://{settings.web_host}:{settings.web_port}/circuit/"
    status = _call(url, close=args.action == "close", timeout_s=args.timeout_s, token=settings.api_token)
    state = "OPEN" if status.get("open") else "closed"
    print(f"circuit breaker: {state}", end="")
    if status.get("open"):
        print(f" since {status.get('opened_at')}: {status.get('reason')}", end="")
    print(
        f"; this minute {status.get('this_minute')} of {status.get('limit_per_minute')} interventions;"
        f" tripped {status.get('trips')} times" + ("; replay mode (breaker off)" if status.get("replay") else "")
    )
    return 0


def register(sub: Any) -> None:
    """Add ``retention circuit`` to the command's sub-parsers."""
    p = sub.add_parser(
        "circuit",
        help="show or close a worker's intervention circuit breaker",
        description="The breaker opens when interventions surge; it closes after RETENTION_CIRCUIT_COOLDOWN_S "
        "or when an operator closes it here (each worker has its own).",
    )
    p.add_argument("action", choices=("status", "close"), help="status: show it; close: admit interventions again")
    p.add_argument("--url", default="", help="the worker's circuit endpoint (default: its web host and port)")
    p.add_argument("--timeout-s", type=float, default=5.0, help="how long to wait for the worker's answer")
    add_settings_flags(p, ("web_host", "web_port"))
    p.set_defaults(func=cmd_circuit)
