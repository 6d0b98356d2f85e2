"""Optional API key for every scoring route: set CDP_API_KEY and send `X-API-Key: <key>` (or
`Authorization: Bearer <key>`). Health, readiness and metrics routes stay open for probes."""

from __future__ import annotations

import hmac
import json
import os

OPEN_PATHS = ("/healthz", "/livez", "/readyz", "/metrics")


class ApiKeyMiddleware:
    """ASGI middleware: 401 with a JSON message when CDP_API_KEY is set and the request lacks it."""

    def __init__(self, app) -> None:
        self.app = app
        self.key = os.environ.get("CDP_API_KEY", "")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self.key or scope.get("path", "") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
        if given and hmac.compare_digest(given.encode(), self.key.encode()):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": "missing or wrong API key: send header X-API-Key (CDP_API_KEY is set)"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
