"""The HTTP guard in front of every route (ASGI middleware on the BentoML service).

- API key: with CDP_API_KEY set, every route but the probes (/healthz, /livez, /readyz) needs
  `X-API-Key: <key>` or `Authorization: Bearer <key>` (the `Bearer` scheme is required), else 401.
  /metrics is behind the key too; the Swagger UI page and spec (GET /, /docs.json) are not.
- Exposure: a server bound to a non-loopback address without CDP_API_KEY answers every route but
  the probes with 503 (and `cdp serve` refuses to start) unless CDP_INSECURE=1 (`cdp serve --insecure`).
- Body size: at most CDP_MAX_BODY_BYTES (default 1 MiB; 1000 ids of 64 characters are ~70 kB),
  else 413, also for chunked bodies without Content-Length.
- Content type: POST/PUT/PATCH bodies must be `application/json` (multipart, form, text: 415).
- Unknown fields on /churn_batch: 422 (BentoML ignores them on batchable routes).
- Authorization, X-API-Key, Content-Type or Content-Length sent twice: 400 (which one counts is ambiguous).
"""

from __future__ import annotations

import hmac
import ipaddress
import json

from cdp.settings import Settings, setting

OPEN_PATHS = ("/healthz", "/livez", "/readyz")
DOC_PATHS = ("/", "/docs.json")  # Swagger UI and its spec (no data): readable in a browser without the key
DEFAULT_MAX_BODY_BYTES: int = Settings.model_fields["max_body_bytes"].default
BODY_METHODS = ("POST", "PUT", "PATCH")
SINGLE_HEADERS = ("authorization", "x-api-key", "content-type", "content-length")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def insecure_allowed() -> bool:
    return bool(setting("insecure"))


def max_body_bytes() -> int:
    return int(setting("max_body_bytes"))


def presented_key(headers: dict[str, str]) -> str:
    """The key a request presents: X-API-Key, or Authorization with the Bearer scheme (only)."""
    if headers.get("x-api-key"):
        return headers["x-api-key"].strip()
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


async def _answer(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# Routes whose input model BentoML builds from the function signature (batchable APIs), where an
# unknown field is silently ignored; the other routes' pydantic models forbid unknown fields themselves.
BATCH_FIELDS = {"/churn_batch": ("customer_ids",)}


def _unknown_fields(path: str, body: bytes) -> str | None:
    """The first unknown top-level field of a batch route's JSON object body, or None."""
    if path not in BATCH_FIELDS:
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):  # malformed or absurdly nested: BentoML answers it itself (400)
        return None
    extra = sorted(set(parsed) - set(BATCH_FIELDS[path])) if isinstance(parsed, dict) else []
    return extra[0][:64] if extra else None


class ApiKeyMiddleware:
    """ASGI middleware: exposure check, API key, content type and body size (see module docstring)."""

    def __init__(self, app) -> None:
        self.app = app
        key = setting("api_key")
        self.key = key.get_secret_value() if key else ""
        self.insecure = insecure_allowed()
        self.limit = max_body_bytes()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        names = [k.decode("latin-1").lower() for k, _ in scope.get("headers", [])]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        repeated = sorted({n for n in names if n in SINGLE_HEADERS and names.count(n) > 1})
        if repeated:  # which one would count is ambiguous (proxies and servers disagree): refuse
            await _answer(send, 400, f"header {repeated[0]}: sent more than once")
            return
        server = scope.get("server") or ("", None)
        docs = scope.get("method") == "GET" and (path in DOC_PATHS or path.startswith("/static_content/"))
        if path not in OPEN_PATHS and not docs:
            if not self.key and not self.insecure and server[0] and not is_loopback(str(server[0])):
                await _answer(
                    send,
                    503,
                    f"refusing to serve on non-loopback address {server[0]} without an API key: "
                    "set CDP_API_KEY, or CDP_INSECURE=1 (cdp serve --insecure) to serve openly",
                )
                return
            if self.key:
                given = presented_key(headers)
                if not (given and hmac.compare_digest(given.encode(), self.key.encode())):
                    await _answer(
                        send,
                        401,
                        "missing or wrong API key: send header X-API-Key: <key> or Authorization: Bearer <key>",
                    )
                    return
        if scope.get("method", "GET") not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = headers.get("content-length", "").strip()
        if declared:
            if not declared.isdigit():
                await _answer(send, 400, "content-length: not a number")
                return
            if int(declared) > self.limit:
                await _answer(send, 413, f"request body over {self.limit} bytes (CDP_MAX_BODY_BYTES)")
                return
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json" and not (media == "" and declared in ("", "0")):
            await _answer(send, 415, f"content-type: send application/json (got '{media or 'none'}')")
            return
        chunks, size = [], 0
        while True:  # read the body here, bounded: a chunked body has no Content-Length to check
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _answer(send, 413, f"request body over {self.limit} bytes (CDP_MAX_BODY_BYTES)")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False
        unknown = _unknown_fields(path, body)
        if unknown:
            await _answer(send, 422, f"{unknown}: unknown field (send only {', '.join(BATCH_FIELDS[path])})")
            return

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
