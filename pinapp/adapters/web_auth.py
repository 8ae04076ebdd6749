"""Authentication of the web (table views, pages, live feed, faust's own routes) beyond loopback.

Design notes: docs/architecture.md, "pinapp/adapters/web_auth.py".
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from yarl import URL

from config import WorkerSettings
from pinapp.errors import PinappError

__all__ = ["OPEN_PATHS", "InsecureForward", "authorized", "middleware", "peer_headers"]

#: what stays open with ``worker.web_open_health``
OPEN_PATHS = frozenset({"/health", "/metrics"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def authorized(header: str, token: bytes) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (bearer, or basic's password)."""
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return hmac.compare_digest(value.strip().encode(), token)
    if scheme == "basic":
        try:
            _, _, password = base64.b64decode(value.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(password, token)
    return False


class InsecureForward(PinappError):
    """The token would cross the network in clear to another worker (``web_behind_tls_proxy``
    without a certificate of the worker's own): set ``worker.web_tls_cert_file`` and
    ``web_tls_key_file`` so the workers call each other over TLS."""


def peer_headers(worker: WorkerSettings, target: URL) -> dict[str, str]:
    """What a worker sends another of its deployment at ``target`` (they share the token): a
    per-key read forwarded to its owner, or the cluster's dedup state gathered.

    Raises:
        InsecureForward: the token would go to another host over plain HTTP.
    """
    if not worker.web_auth_required:
        return {}
    if target.scheme != "https" and not _loopback(target.host or ""):
        raise InsecureForward(
            f"not forwarding to {target.host}:{target.port} over plain http with the token; set "
            "worker.web_tls_cert_file and worker.web_tls_key_file so the workers call each other over TLS"
        )
    return {"Authorization": f"Bearer {worker.web_token.get_secret_value()}"}


def _loopback(host: str) -> bool:
    """Whether a call to ``host`` stays on this machine (0.0.0.0, a worker's canonical URL when it
    binds every address, is reached as this host)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    return address.is_loopback or address.is_unspecified


def middleware(worker: WorkerSettings) -> Any | None:
    """The aiohttp middleware that asks every request for the token; ``None`` on loopback."""
    if not worker.web_auth_required:
        return None
    token = worker.web_token.get_secret_value().encode()
    open_paths = OPEN_PATHS if worker.web_open_health else frozenset()

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.rstrip("/") in open_paths or authorized(request.headers.get("Authorization", ""), token):
            return await handler(request)
        return web.Response(
            status=401,
            text="401: this pinapp web needs its token (bearer, or as the password)\n",
            headers={"WWW-Authenticate": 'Basic realm="pinapp", charset="UTF-8"'},
        )

    return require_token
