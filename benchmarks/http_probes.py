"""HTTP probe sweep (issue 16): bad requests against every route of the real BentoML service.

Starts `bentoml serve` (cdp.serving.server.running_server, as the integration tests do) on a
workspace with CDP_API_KEY set, then sends a systematic sweep: every route x (missing / wrong /
malformed Authorization; missing, garbage, truncated, deeply nested, huge JSON; wrong types per
field; unknown customers; path-traversal and unicode strings; negative / huge / fractional k;
wrong content types and methods; oversized and chunked bodies; malformed raw HTTP), with and
without the key. Prints counts by status class and lists every 5xx, every auth bypass (a protected
route answering anything but a 4xx refusal without the right key) and every bad-input probe not
answered 4xx.

    .venv/bin/python benchmarks/http_probes.py                 # builds a 400-customer workspace first
    .venv/bin/python benchmarks/http_probes.py --home data     # a workspace after `make demo`

Exit status 1 when any 5xx, bypass or non-4xx answer to bad input was seen.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "probe-key-0123456789"
OPEN = ("/healthz", "/livez", "/readyz")
# route -> a valid body and, per field, wrong values (each one a bad-input probe)
TRAVERSAL = ["../../../../etc/passwd", "..%2f..%2fetc%2fpasswd", "/etc/passwd\x00", "C:\\Windows\\win.ini"]
WEIRD_IDS = ["", " ", "x" * 65, "x" * 100_000, "\u202e\u0000", "💥" * 40, "'; DROP TABLE x; --", "<script>", *TRAVERSAL]
BAD_NUMBERS = [-1, 0, 51, 10**30, -(10**30), 5.5, "5", "five", True, None, [], {}, 1e308]


@dataclass
class Probe:
    name: str
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] | None = None
    auth: bool = True  # send the right key
    bad: bool = True  # bad input: must be answered 4xx
    raw: bytes | None = None  # a raw HTTP request (malformed framing), sent over a socket


def valid_bodies(customer: str, campaign: str) -> dict[str, dict]:
    return {
        "/churn": {"customer_ids": [customer], "reasons": True},
        "/churn_batch": {"customer_ids": [customer]},
        "/next_best_product": {"customer_id": customer, "k": 5},
        "/next_best_product_batch": {"customer_ids": [customer], "k": 5},
        "/campaign_response": {"customer_ids": [customer], "campaign_id": campaign},
        "/profile": {"customer_id": customer},
        "/events": {"events": [{"customer_id": customer, "event_type": "search", "timestamp": _now()}]},
    }


def _now() -> str:
    return datetime.now(UTC).isoformat()


def field_values(field: str, value) -> list:
    if isinstance(value, list):  # a list of ids
        return [
            "not-a-list",
            123,
            None,
            {},
            [None],
            [1, 2],
            [{}],
            [[]],
            [True],
            *[[w] for w in WEIRD_IDS],
            ["a"] * 1001,
        ]
    if field == "k":
        return BAD_NUMBERS
    if field == "reasons":
        return ["yes", 2, None, [], {}]
    if field == "min_uplift":
        return ["abc", None, [], {}, 1e308]
    return [None, 123, [], {}, True, *WEIRD_IDS]  # customer_id, campaign_id


def probes(customer: str, campaign: str, routes: list[str], limit: int, key: str = KEY) -> list[Probe]:
    KEY = key  # the key the server under test holds (shadows the default)
    js = {"Content-Type": "application/json"}
    out: list[Probe] = []
    bodies = valid_bodies(customer, campaign)
    for path in routes:
        good = bodies.get(path, {})
        body = json.dumps(good).encode()
        # authorization: every malformed or wrong form, on a valid request
        for label, headers in {
            "no auth": {},
            "key without Bearer": {"Authorization": KEY},
            "Bearer only": {"Authorization": "Bearer"},
            "wrong key": {"Authorization": "Bearer wrong"},
            "key + suffix": {"Authorization": f"Bearer {KEY}x"},
            "key prefix": {"Authorization": f"Bearer {KEY[:-1]}"},
            "Basic scheme": {"Authorization": "Basic cHJvYmU6cHJvYmU="},
            "Token scheme": {"Authorization": f"Token {KEY}"},
            "X-API-Key wrong": {"X-API-Key": "wrong"},
            "X-API-Key empty + Bearer wrong": {"X-API-Key": "", "Authorization": "Bearer wrong"},
            "unicode key": {"Authorization": "Bearer ключ".encode().decode("latin-1")},
            "uppercase key": {"Authorization": f"Bearer {KEY.upper()}"},
            "key in query": {},
        }.items():
            suffix = f"?api_key={KEY}" if label == "key in query" else ""
            out.append(Probe(f"{path} {label}", "POST", path + suffix, body, {**js, **headers}, auth=False, bad=False))
        out.append(Probe(f"{path} GET no auth", "GET", path, None, {}, auth=False))
        if path == "/healthz":
            continue
        # bodies
        for label, raw in {
            "no body": b"",
            "null": b"null",
            "list": b"[]",
            "empty object": b"{}",
            "number": b"123",
            "string": b'"x"',
            "garbage": b"\x00\xff\xfe garbage",
            "invalid utf-8": b'{"customer_id": "\xff\xfe"}',
            "truncated": body[: len(body) // 2],
            "trailing garbage": body + b"}}}",
            "NaN": b'{"customer_ids": [NaN], "customer_id": NaN, "k": NaN}',
            "deep nesting": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
            "deep list": b"[" * 100_000 + b"]" * 100_000,
            "extra field": json.dumps({**good, "unexpected": 1}).encode(),
            "under-limit huge list": json.dumps({"customer_ids": ["cus_x"] * 50_000, "customer_id": "x"}).encode(),
        }.items():
            out.append(Probe(f"{path} body {label}", "POST", path, raw, dict(js)))
        for field, value in good.items():
            for wrong in field_values(field, value):
                text = json.dumps({**good, field: wrong})
                item = wrong[0] if isinstance(wrong, list) and len(wrong) == 1 else wrong
                # a well-formed id string naming nobody is an unknown customer (per-id error or 404),
                # as is any string on /churn_batch (its contract: one answer per id, errors included)
                named = isinstance(item, str) and field in ("customer_id", "customer_ids") and wrong != "not-a-list"
                unknown = named and (path == "/churn_batch" or 1 <= len(item.strip()) <= 64)
                probe = Probe(f"{path} {field}={text[:60]!s}", "POST", path, text.encode(), dict(js), bad=not unknown)
                out.append(probe)
            missing = {k: v for k, v in good.items() if k != field}
            if field not in ("reasons", "k", "exclude_owned", "min_uplift"):
                out.append(Probe(f"{path} missing {field}", "POST", path, json.dumps(missing).encode(), dict(js)))
        # size and content type
        out.append(Probe(f"{path} over limit", "POST", path, b'{"customer_ids": ["' + b"x" * limit + b'"]}', dict(js)))
        for media in (
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
            "application/xml",
            "application/json-patch+json",
            "",
        ):
            headers = {"Content-Type": media} if media else {}
            data = (
                b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--x--\r\n" if "multipart" in media else body
            )
            out.append(Probe(f"{path} content-type {media or 'none'}", "POST", path, data, headers))
        for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"):
            out.append(Probe(f"{path} {method}", method, path, body if method in ("PUT", "PATCH") else None, dict(js)))
        # unknown customers: a well-formed request, answered per id (batch) or 404 (single)
        unknown = json.loads(json.dumps(good).replace(customer, "cus_nobody_here"))
        out.append(Probe(f"{path} unknown customer", "POST", path, json.dumps(unknown).encode(), dict(js), bad=False))
    # paths
    for path in (
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/static_content/../../../../etc/passwd",
        "/static_content/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static_content/..%2f..%2f..%2fetc%2fpasswd",
        "/static_content/nonexistent.js",
        "//churn",
        "/churn/",
        "/CHURN",
        "/nonexistent",
        "/" + "a" * 10_000,
        "/%00",
        "/%ff%fe",
        "/💥",
        "/docs.json/../metrics",
        "/metrics",
    ):
        routed = path in ("//churn", "/churn/", "/docs.json/../metrics", "/metrics")  # real routes, other spellings
        for auth in (True, False):  # raw: an HTTP client would normalize the path before sending it
            key = f"Authorization: Bearer {KEY}\r\n" if auth else ""
            text = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{key}Connection: close\r\n\r\n"
            label = f"path {path[:40]}" + ("" if auth else " no auth")
            out.append(Probe(label, "RAW", path, raw=text.encode(), auth=auth, bad=auth and not routed))
    # malformed framing (raw socket)
    host = "Host: 127.0.0.1\r\nAuthorization: Bearer " + KEY + "\r\n"
    raws = {
        "content-length not a number": f"POST /churn HTTP/1.1\r\n{host}Content-Type: application/json\r\n"
        "Content-Length: abc\r\n\r\n{}",
        "negative content-length": f"POST /churn HTTP/1.1\r\n{host}Content-Type: application/json\r\n"
        "Content-Length: -5\r\n\r\n{}",
        "chunked over limit": f"POST /churn HTTP/1.1\r\n{host}Content-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
        + "".join(f"{0x10000:x}\r\n{'x' * 0x10000}\r\n" for _ in range(limit // 0x10000 + 2))
        + "0\r\n\r\n",
        "chunked garbage": f"POST /churn HTTP/1.1\r\n{host}Content-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        "huge header": f"POST /churn HTTP/1.1\r\n{host}X-Big: {'a' * 200_000}\r\nContent-Length: 2\r\n\r\n{{}}",
        "Bearer empty": "POST /churn HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \r\n"
        'Content-Type: application/json\r\nContent-Length: 25\r\n\r\n{"customer_ids": ["cus"]}',
        "two Authorization headers": f"POST /churn HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 25\r\n\r\n"
        '{"customer_ids": ["cus"]}',
        "bad request line": "GARBAGE\r\n\r\n",
        "http/0.9": "GET /\r\n\r\n",
        "chunked without auth": "POST /churn HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        'Transfer-Encoding: chunked\r\n\r\n19\r\n{"customer_ids": ["cus"]}\r\n0\r\n\r\n',
    }
    unauthenticated = ("chunked without auth", "Bearer empty", "two Authorization headers")
    for label, text in raws.items():
        path = "/" if label == "http/0.9" else "/churn"
        out.append(
            Probe(f"raw {label}", "RAW", path, raw=text.encode(), auth=label not in unauthenticated, bad=path != "/")
        )
    return out


def send_raw(port: int, data: bytes, timeout: float = 15.0) -> int | str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server may answer and close before the whole body was sent
        reply = b""
        try:
            while b"\r\n" not in reply:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        except OSError as error:
            return f"connection {type(error).__name__}"
    line = reply.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) >= 2 and line[1].isdigit() else "connection closed"


def run(url: str, port: int, sweep: list[Probe], key: str = KEY) -> dict:
    import httpx

    results = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for probe in sweep:
            headers = dict(probe.headers or {})
            if probe.auth and probe.method != "RAW":
                headers.setdefault("Authorization", f"Bearer {key}")
            try:
                if probe.method == "RAW":
                    status: int | str = send_raw(port, probe.raw or b"")
                else:
                    encoded = [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]  # non-ASCII keys too
                    status = client.request(probe.method, probe.path, content=probe.body, headers=encoded).status_code
            except (httpx.HTTPError, OSError) as error:
                status = f"client {type(error).__name__}"
            results.append((probe, status))
    return summarize(results)


def summarize(results: list[tuple[Probe, int | str]]) -> dict:
    classes: Counter = Counter()
    server_errors, bypasses, not_4xx = [], [], []
    for probe, status in results:
        kind = f"{status // 100}xx" if isinstance(status, int) else "no HTTP answer"
        classes[kind] += 1
        path = probe.path.split("?")[0]
        if isinstance(status, int) and status >= 500 and not (path == "/next_best_product" and status == 503):
            server_errors.append(f"{status} {probe.name}")
        docs = path in ("/", "/docs.json") or path.startswith("/static_content/")  # Swagger UI: open, no data
        protected = path not in OPEN and not (probe.method in ("GET", "RAW") and docs)
        if not probe.auth and protected and not (isinstance(status, int) and 400 <= status < 500):
            bypasses.append(f"{status} {probe.name}")
        elif probe.bad and probe.auth and not (isinstance(status, int) and 400 <= status < 500):
            not_4xx.append(f"{status} {probe.name}")
    return {
        "probes": len(results),
        "by_status_class": dict(sorted(classes.items())),
        "5xx": server_errors,
        "auth_bypasses": bypasses,
        "bad_input_not_4xx": not_4xx,
    }


def build_workspace(home: Path, customers: int) -> None:
    cdp = str(Path(sys.executable).with_name("cdp"))
    steps = [["generate", "--customers", str(customers), "--seed", "5"], ["ingest"], ["resolve"], ["features"]]
    steps += [["train", m] for m in ("churn", "next-best-product", "campaign-response")] + [["score"]]
    for step in steps:
        subprocess.run([cdp, *step, "--home", str(home)], check=True, capture_output=True)


def main() -> int:
    import pandas as pd

    from cdp.serving.auth import DEFAULT_MAX_BODY_BYTES
    from cdp.serving.server import running_server
    from cdp.workspace import Workspace

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--home", type=Path, help="workspace with served models (default, or when it has no scores yet: build one)"
    )
    parser.add_argument("--customers", type=int, default=400)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="http_probes_")) / "ws"
    if not (home / "features" / "churn_scores.parquet").exists():
        print(f"building a {args.customers}-customer workspace in {home} ...", flush=True)
        build_workspace(home, args.customers)
    ws = Workspace(home.resolve())
    customer = str(pd.read_parquet(ws.features / "churn_scores.parquet")["customer_id"].iloc[0])
    campaign = str(pd.read_parquet(ws.staged / "campaigns.parquet")["campaign_id"].iloc[0])
    port = args.port or _free_port()
    env = {"CDP_API_KEY": KEY, "CDP_MODEL_RELOAD_SECONDS": "0"}
    with running_server(ws, port, log_path=ws.reports / "http_probes_bentoml.log", extra_env=env) as url:
        import httpx

        spec = httpx.get(f"{url}/docs.json", timeout=30).json()
        routes = sorted(p for p in spec["paths"] if p not in ("/livez", "/readyz", "/metrics"))
        sweep = probes(customer, campaign, routes, DEFAULT_MAX_BODY_BYTES)
        result = run(url, port, sweep)
    print(json.dumps({"routes": routes, **result}, indent=1))
    return 1 if result["5xx"] or result["auth_bypasses"] or result["bad_input_not_4xx"] else 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
