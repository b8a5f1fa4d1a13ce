"""Request guards: Host and Origin checks, body size limit, JSON-only writes, safe headers.

Written as plain ASGI middleware so a refused request never reaches a route (or the store).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class GuardMiddleware:
    """Refuses requests that could come from another site or carry too much.

    - ``Host`` must be one of ``allowed_hosts`` (DNS rebinding).
    - A request with an ``Origin`` header must come from an allowed host: another site's page
      can neither write (CSRF) nor hold event streams open on this server.
    - A write must be ``application/json`` (a form or ``text/plain`` post is refused: those
      are the bodies a page can send cross-site without a preflight).
    - Bodies over ``max_body_bytes`` are refused with 413.
    - A method an API path does not take is answered 405 with ``Allow`` naming exactly the
      methods it takes (``allowed_methods(path)``, from the OpenAPI schema), before any body
      check and before a route could read ``/samples/flags`` as ``/samples/{sample_id}``.
    """

    def __init__(
        self,
        app: ASGIApp,
        allowed_hosts: list[str],
        max_body_bytes: int,
        allowed_methods: Callable[[str], frozenset[str]],
    ) -> None:
        self.app = app
        self.allowed_hosts = {h.lower().strip("[]") for h in allowed_hosts}
        self.max_body_bytes = max_body_bytes
        self.allowed_methods = allowed_methods

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"]
        host = _hostname(headers.get("host", ""))
        if host not in self.allowed_hosts:
            await refuse(send, 400, f"Host {headers.get('host', '')!r} is not allowed")
            return
        origin = headers.get("origin")
        if origin is not None and _hostname(urlsplit(origin).netloc) not in self.allowed_hosts:
            await refuse(send, 403, f"Origin {origin!r} may not use this server")
            return
        allowed = self.allowed_methods(scope["path"])
        if allowed and method not in allowed:
            await refuse(
                send, 405, f"{method} is not allowed here", allow=", ".join(sorted(allowed))
            )
            return
        if method in WRITE_METHODS:
            content_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != "application/json":
                await refuse(send, 415, "Write requests must send application/json")
                return
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                await refuse(send, 413, f"Body larger than {self.max_body_bytes} bytes")
                return
            receive = _limited(receive, self.max_body_bytes)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                existing = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in extra if k not in existing
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except _BodyTooLarge:
            await refuse(send, 413, f"Body larger than {self.max_body_bytes} bytes")


class _BodyTooLarge(Exception):
    pass


def _limited(receive: Receive, limit: int) -> Receive:
    received = 0

    async def wrapped() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyTooLarge
        return message

    return wrapped


def _hostname(netloc: str) -> str:
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


async def refuse(
    send: Send, status: int, detail: str, retry_after: int | None = None, allow: str | None = None
) -> None:
    """Answers ``status`` with a Problem body ``{"detail": detail}``."""
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    if allow is not None:
        headers.append((b"allow", allow.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
