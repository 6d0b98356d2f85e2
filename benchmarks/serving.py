"""Serving benchmark: raw Feast online reads vs our HTTP endpoints, SQLite vs Redis; batch scoring
and online write throughput vs Feast's own paths; then a bounded steady-rate load test.

Run by anyone (not a unit test; timings on shared machines are noisy):
    .venv/bin/python benchmarks/serving.py                       # builds a 10k-people workspace first
    .venv/bin/python benchmarks/serving.py --home data           # reuse a workspace (after `make demo`)
    .venv/bin/python benchmarks/serving.py --customers 100000 --load-seconds 120

Needs `redis-server` on PATH (Debian package redis-server) for the Redis half; it starts a private
one on a free port. Prints a table per part and writes benchmarks/results/serving_<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cdp.workspace import Workspace  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentiles(samples_s: list[float]) -> dict:
    ms = np.array(samples_s) * 1000
    return {
        "n": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "per_s": round(len(ms) / float(np.sum(ms) / 1000), 1),
    }


def timed(fn, repeat: int, warmup: int = 20) -> dict:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


def show(title: str, rows: dict) -> None:
    print(f"\n== {title}")
    for name, values in rows.items():
        print(f"  {name:<44} " + "  ".join(f"{k}={v}" for k, v in values.items()))


def build_workspace(customers: int, seed: int) -> Workspace:
    from cdp import pipeline

    ws = Workspace(Path(tempfile.mkdtemp(prefix="cdp-bench-")))
    ws.ensure()
    os.environ["CDP_HOME"] = str(ws.root)
    for name, step in [
        ("generate", lambda: pipeline.generate(ws, customers, seed=seed)),
        ("ingest", lambda: pipeline.ingest(ws)),
        ("resolve", lambda: pipeline.resolve(ws)),
        ("features", lambda: pipeline.build_features(ws)),
        ("train churn", lambda: pipeline.train(ws, "churn")),
        ("train next-best-product", lambda: pipeline.train(ws, "next-best-product")),
        ("train campaign-response", lambda: pipeline.train(ws, "campaign-response")),
        ("score", lambda: pipeline.score(ws)),
    ]:
        started = time.perf_counter()
        step()
        print(f"  built: {name} in {time.perf_counter() - started:.1f}s", flush=True)
    return ws


@contextmanager
def redis(port: int, workdir: Path):
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()


def write_throughput(ws: Workspace) -> dict:
    """Latest snapshot into the online store: Feast's materialize vs the bulk writer (same rows)."""
    from cdp.features.build import load_snapshots
    from cdp.featurestore.store import materialize_latest, open_store, repo_definitions

    as_of = load_snapshots(ws)[0][-1]
    store = open_store(ws)
    values_per_row = np.mean([len(f) for f in repo_definitions().FEATURES.values()])
    out = {}
    for engine in ("feast", "bulk"):
        started = time.perf_counter()
        rows = materialize_latest(ws, store, as_of, engine=engine)
        seconds = time.perf_counter() - started
        # rows = one customer in one feature view; the yardstick is customers x 20 features
        out[f"materialize {engine}"] = {
            "view_rows": rows,
            "seconds": round(seconds, 2),
            "rows_per_s": round(rows / seconds),
            "features_per_row": round(float(values_per_row), 1),
            "values_per_s": round(rows * values_per_row / seconds),
            "20_feature_rows_per_s": round(rows * values_per_row / 20 / seconds),
        }
    out["ratio bulk/feast"] = {
        "x": round(out["materialize bulk"]["rows_per_s"] / out["materialize feast"]["rows_per_s"], 2)
    }
    return out


def lean(run):
    """`run` with the server's access log and metrics off (what they cost per call)."""
    os.environ.update(CDP_ACCESS_LOG="0", CDP_SERVE_METRICS="0")
    try:
        return run()
    finally:
        for key in ("CDP_ACCESS_LOG", "CDP_SERVE_METRICS"):
            os.environ.pop(key)


def fill_online_store(ws: Workspace) -> None:
    from cdp.features.build import load_snapshots
    from cdp.featurestore.store import materialize_latest, open_store

    materialize_latest(ws, open_store(ws), load_snapshots(ws)[0][-1])


def batch_scoring(ws: Workspace) -> dict:
    """Churn scoring of every active customer: the steps (read, predict, write back), then `cdp
    score`'s churn step end to end (consent filter and model load included), vs Feast's PIT join."""
    from cdp.features.build import load_snapshots
    from cdp.features.timeline import load_timeline
    from cdp.featurestore.latest import latest_service_features
    from cdp.featurestore.store import open_store
    from cdp.models.churn import CHURN, scoring_entities
    from cdp.serving.batch import score_churn, write_back
    from cdp.serving.churn_scorer import ChurnScorer
    from cdp.training.tracking import load_champion
    from cdp.training.train import build_training_set

    as_of = load_snapshots(ws)[0][-1]
    store = open_store(ws)
    orders = load_timeline(ws).orders
    entities = scoring_entities(orders, as_of)
    model, version = load_champion(ws, CHURN.name)
    scorer = ChurnScorer.from_model(model, version)
    started = time.perf_counter()
    features = latest_service_features(ws, store, CHURN.feature_service, entities, as_of)
    read = time.perf_counter() - started
    probabilities = scorer.probabilities(scorer.matrix(features), threads=0)
    predicted = time.perf_counter() - started
    scores = features[["customer_id", "event_timestamp"]].assign(
        churn_probability=probabilities, churn_model_version=version, churn_scored_at=f"{as_of:%Y-%m-%dT%H:%M:%SZ}"
    )
    write_back(store, "churn_scores", scores)
    total = time.perf_counter() - started
    started = time.perf_counter()
    scored = len(score_churn(ws, store, orders, as_of))
    end_to_end = time.perf_counter() - started
    started = time.perf_counter()
    build_training_set(store, CHURN, entities)
    feast_read = time.perf_counter() - started
    n = len(entities)
    return {
        "customers": {"n": n},
        "ours: read latest snapshot": {"seconds": round(read, 3), "customers_per_s": round(n / read)},
        "ours: + predict": {"seconds": round(predicted, 3), "customers_per_s": round(n / predicted)},
        "ours: + write back (offline + online)": {"seconds": round(total, 3), "customers_per_s": round(n / total)},
        "cdp score, churn step end to end": {
            "seconds": round(end_to_end, 3),
            "customers_per_s": round(scored / end_to_end),
            "scored (consent-filtered)": scored,
        },
        "baseline: Feast point-in-time read only": {
            "seconds": round(feast_read, 3),
            "customers_per_s": round(n / feast_read),
        },
        "ratio read: ours/Feast": {"x": round(feast_read / read, 2)},
    }


def latency(ws: Workspace, store_kind: str, repeat: int) -> dict:
    import httpx

    from cdp.featurestore.online_reader import OnlineReader
    from cdp.featurestore.store import open_store
    from cdp.models.churn import CHURN
    from cdp.serving.server import running_server

    store = open_store(ws)
    service = store.get_feature_service(CHURN.feature_service)
    ids = pd.read_parquet(ws.features / "churn_scores.parquet")["customer_id"].drop_duplicates().tolist()
    rng = np.random.default_rng(0)
    one = lambda: [{"customer_id": ids[rng.integers(len(ids))]}]
    hundred = lambda: [{"customer_id": c} for c in rng.choice(ids, 100, replace=False)]
    rows = {
        f"{store_kind}: feast get_online_features x1": timed(
            lambda: store.get_online_features(service, one()).to_dict(), repeat
        ),
        f"{store_kind}: feast get_online_features x100": timed(
            lambda: store.get_online_features(service, hundred()).to_dict(), max(repeat // 5, 20)
        ),
    }
    reader = OnlineReader(store)  # what the service reads with: same answer (tests), fewer layers
    rows[f"{store_kind}: cdp online_reader x1"] = timed(lambda: reader.read(service, [one()[0]["customer_id"]]), repeat)
    rows[f"{store_kind}: cdp online_reader x100"] = timed(
        lambda: reader.read(service, [r["customer_id"] for r in hundred()]), max(repeat // 5, 20)
    )
    with running_server(ws, free_port(), log_path=ws.root / f"bench_{store_kind.replace(' ', '_')}.log") as url:
        with httpx.Client(base_url=url, timeout=30) as client:

            def call(route: str, body: dict) -> None:
                response = client.post(route, json=body)
                if response.status_code != 200:
                    raise RuntimeError(f"{route}: {response.status_code} {response.text[:200]}")

            rows[f"{store_kind}: /churn x1"] = timed(
                lambda: call("/churn", {"customer_ids": [one()[0]["customer_id"]]}), repeat
            )
            rows[f"{store_kind}: /churn x1 (no reasons)"] = timed(
                lambda: call("/churn", {"customer_ids": [one()[0]["customer_id"]], "reasons": False}), repeat
            )
            rows[f"{store_kind}: /next_best_product x1"] = timed(
                lambda: call("/next_best_product", {"customer_id": one()[0]["customer_id"]}), repeat
            )
            rows[f"{store_kind}: /churn x100"] = timed(
                lambda: call("/churn", {"customer_ids": [r["customer_id"] for r in hundred()]}), max(repeat // 5, 20)
            )
            rows[f"{store_kind}: /churn x100 (no reasons)"] = timed(
                lambda: call("/churn", {"customer_ids": [r["customer_id"] for r in hundred()], "reasons": False}),
                max(repeat // 5, 20),
            )
            rows[f"{store_kind}: /next_best_product_batch x100"] = timed(
                lambda: call("/next_best_product_batch", {"customer_ids": [r["customer_id"] for r in hundred()]}),
                max(repeat // 5, 20),
            )
    feast = rows[f"{store_kind}: feast get_online_features x1"]["p99_ms"]
    rows[f"{store_kind}: ratio /churn p99 / feast p99"] = {
        "x": round(rows[f"{store_kind}: /churn x1"]["p99_ms"] / feast, 2)
    }
    return rows


async def _steady(url: str, ids: list[str], rate: float, seconds: float, window: float) -> dict:
    import httpx

    results: list[tuple[float, float, bool]] = []
    rng = np.random.default_rng(1)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:

        async def one(at: float) -> None:
            started = time.perf_counter()
            try:
                if rng.random() < 0.5:
                    r = await client.post("/churn", json={"customer_ids": [ids[rng.integers(len(ids))]]})
                else:
                    r = await client.post("/next_best_product", json={"customer_id": ids[rng.integers(len(ids))]})
                ok = r.status_code == 200
            except Exception:
                ok = False
            results.append((at, time.perf_counter() - started, ok))

        tasks, begin = [], time.perf_counter()
        for i in range(int(rate * seconds)):
            due = begin + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(one(due - begin)))
        await asyncio.gather(*tasks)
    frame = pd.DataFrame(results, columns=["at", "seconds", "ok"])
    frame["window"] = (frame["at"] // window * window).astype(int)
    over_time = {
        f"t={w}s": {
            "n": len(g),
            "errors": int((~g["ok"]).sum()),
            "p50_ms": round(float(g["seconds"].quantile(0.5) * 1000), 2),
            "p99_ms": round(float(g["seconds"].quantile(0.99) * 1000), 2),
        }
        for w, g in frame.groupby("window")
    }
    return {
        "total": {
            "requests": len(frame),
            "errors": int((~frame["ok"]).sum()),
            "rate_per_s": rate,
            **percentiles(frame["seconds"].tolist()),
        },
        **over_time,
    }


def load_test(ws: Workspace, rate: float, seconds: float) -> dict:
    from cdp.serving.server import running_server

    ids = pd.read_parquet(ws.features / "churn_scores.parquet")["customer_id"].drop_duplicates().tolist()
    with running_server(ws, free_port(), log_path=ws.root / "bench_load.log") as url:
        return asyncio.run(_steady(url, ids, rate, seconds, window=max(seconds / 6, 5)))


PARTS = {"batch": "batch_scoring", "write": "online_write", "latency": "latency", "load": "load"}


def measure(report: dict, parts: list, only: set[str]) -> None:
    """Run each (key, title, measurement) whose part (see PARTS) is in `only`, in order; keep and
    print its result."""
    for key, title, run in parts:
        if not any(key.startswith(PARTS[part]) for part in only):
            continue
        report[key] = run()
        show(title, report[key])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="Existing workspace (after `cdp demo`); default: build one")
    parser.add_argument("--customers", type=int, default=10_000, help="People to simulate when building")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=400, help="Calls per single-customer latency measurement")
    parser.add_argument("--load-rate", type=float, default=50.0, help="Requests per second in the load test")
    parser.add_argument("--load-seconds", type=float, default=60.0, help="Load test duration")
    parser.add_argument(
        "--only", default=",".join(PARTS), help=f"Comma-separated parts to run, of: {', '.join(PARTS)} (default: all)"
    )
    args = parser.parse_args()
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    if not only or only - set(PARTS):
        parser.error(f"--only: {args.only!r}: choose from {', '.join(PARTS)}")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    os.environ["CDP_MODEL_RELOAD_SECONDS"] = "0"
    ws = Workspace(args.home.resolve()) if args.home else build_workspace(args.customers, args.seed)
    os.environ["CDP_HOME"] = str(ws.root)
    report: dict = {"workspace": str(ws.root), "machine_cores": os.cpu_count()}

    measure(
        report,
        [
            ("batch_scoring_sqlite", "batch churn scoring (SQLite online store)", lambda: batch_scoring(ws)),
            ("online_write_sqlite", "online write, SQLite", lambda: write_throughput(ws)),
            ("latency_sqlite", "latency, SQLite online store", lambda: latency(ws, "sqlite", args.repeat)),
        ],
        only,
    )
    if shutil.which("redis-server"):
        with redis(free_port(), ws.root) as address:
            os.environ.update(CDP_ONLINE_STORE="redis", CDP_REDIS=address)
            # Redis starts empty: fill it (online write) before scoring and serving from it.
            if "write" not in only:
                fill_online_store(ws)
            measure(
                report,
                [
                    ("online_write_redis", "online write, Redis", lambda: write_throughput(ws)),
                    ("batch_scoring_redis", "batch churn scoring (Redis online store)", lambda: batch_scoring(ws)),
                    ("latency_redis", "latency, Redis online store", lambda: latency(ws, "redis", args.repeat)),
                    (
                        "latency_redis_lean",
                        "latency, Redis, access log and Prometheus metrics off (CDP_ACCESS_LOG=0 CDP_SERVE_METRICS=0)",
                        lambda: lean(lambda: latency(ws, "redis lean", args.repeat)),
                    ),
                    (
                        "load_redis",
                        f"steady load {args.load_rate}/s for {args.load_seconds}s (Redis; half /churn, "
                        "half /next_best_product)",
                        lambda: load_test(ws, args.load_rate, args.load_seconds),
                    ),
                ],
                only,
            )
            os.environ.pop("CDP_ONLINE_STORE")
    else:
        print("\nredis-server not found: Redis half skipped (apt-get install redis-server)")
    out = ROOT / "benchmarks" / "results" / f"serving_{time.strftime('%Y%m%d_%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
