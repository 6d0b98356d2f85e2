"""Point-in-time feature retrieval (a training-set build) vs data size on the embedded DuckDB offline
store and Feast's Spark offline store: where to switch.

    nice -n 10 .venv/bin/python benchmarks/feature_scale.py --customers 10000,40000 --engines duckdb,spark

For each size: synthetic feature tables in a fresh workspace (the seven views of
feature_repo/definitions.py, every customer at every monthly snapshot, ~5% nulls), then per engine
(`CDP_OFFLINE_STORE=duckdb|spark`, Spark `local[2]` unless CDP_SPARK_MASTER says otherwise), in its
own child process: `feast apply` of the definitions, then `get_historical_features` of the churn_v1
FeatureService (7 views, 53 features) for every (customer, snapshot + 1 day) row, i.e. the
churn training set. Reported: wall time of the child, the join alone (`join s`: entity frame in,
pandas frame out), peak memory (largest sum of RSS over the child and its descendants, Spark's JVM
included, sampled every 0.2 s), and whether both engines returned the same frame. Prints a table
and the log-log slope of join time vs entity rows per engine (growth exponent), same style as
benchmarks/scale_out.py; writes benchmarks/results/feature_scale_<time>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from scale_out import _tree_rss, finish_report  # noqa: E402  (same measuring as the identity benchmark)

SNAPSHOTS = 12


def build(root: Path, customers: int, seed: int) -> dict:
    """Feature Parquet files for `customers` x SNAPSHOTS monthly snapshots; entity rows = the product."""
    from cdp.paths import Workspace
    from cdp.store import repo_definitions

    ws = Workspace(root)
    ws.features.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = np.array([f"cus_{i:08d}" for i in range(customers)])
    stamps = pd.date_range("2025-01-01", periods=SNAPSHOTS, freq="MS", tz="UTC").astype("datetime64[us, UTC]")
    frame = pd.DataFrame({"customer_id": np.tile(ids, SNAPSHOTS), "event_timestamp": np.repeat(stamps, customers)})
    for view, fields in repo_definitions().FEATURES.items():
        values = rng.gamma(2.0, 10.0, size=(len(frame), len(fields)))
        values[rng.random(values.shape) < 0.05] = np.nan
        frame.join(pd.DataFrame(values, columns=list(fields))).to_parquet(ws.features / f"{view}.parquet", index=False)
    entities = frame.assign(event_timestamp=frame["event_timestamp"] + pd.Timedelta(days=1))
    entities.to_parquet(root / "entities.parquet", index=False)
    return {"customers": customers, "snapshots": SNAPSHOTS, "entity_rows": len(entities),
            "feature_rows_per_view": len(frame)}


CHILD = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
from pathlib import Path
import pandas as pd
from cdp.paths import Workspace
from cdp.store import apply_definitions
root, out = Path(sys.argv[1]), Path(sys.argv[2])
ws = Workspace(root)
started = time.perf_counter()
store = apply_definitions(ws)
applied = time.perf_counter() - started
entities = pd.read_parquet(root / "entities.parquet")
started = time.perf_counter()
frame = store.get_historical_features(entity_df=entities, features=store.get_feature_service("churn_v1")).to_df()
joined = time.perf_counter() - started
frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
frame.sort_values(["customer_id", "event_timestamp"], ignore_index=True).to_parquet(out.with_suffix(".parquet"))
out.write_text(json.dumps({"apply_seconds": round(applied, 2), "join_seconds": round(joined, 2), "rows": len(frame),
                           "store": store.config.offline_store.type}))
"""


def run_engine(root: Path, engine: str, timeout: float = 600) -> dict:
    """One engine in a child process. A child that fails or outlives `timeout` (Spark's JVM can
    hang after an OutOfMemoryError) is stopped with its process tree and reported, not raised."""
    import psutil

    result = root / f"feature_scale_{engine}.json"
    env = {**os.environ, "CDP_OFFLINE_STORE": engine}
    env.setdefault("CDP_SPARK_MASTER", "local[2]")
    log = open(root / f"feature_scale_{engine}.log", "w")  # a file, not a pipe: a full pipe would block the child
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(result)], cwd=ROOT, env=env,
                             stdout=log, stderr=subprocess.STDOUT, text=True)
    proc, peak = psutil.Process(child.pid), 0
    while child.poll() is None and time.perf_counter() - started < timeout:
        try:
            peak = max(peak, _tree_rss(proc))
        except psutil.Error:
            pass
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    if child.poll() is None:
        for p in [*proc.children(recursive=True), proc]:
            try:
                p.kill()
            except psutil.Error:
                pass
        child.wait()
    log.close()
    if child.returncode != 0:
        text = (root / f"feature_scale_{engine}.log").read_text()
        reason = "OutOfMemoryError" if "OutOfMemoryError" in text else f"exit {child.returncode}"
        return {"seconds": round(seconds, 1), "failed": reason, "peak_tree_rss_mb": round(peak / 2**20)}
    return {"seconds": round(seconds, 1), **json.loads(result.read_text()), "peak_tree_rss_mb": round(peak / 2**20)}


def same_frames(root: Path, a: str, b: str) -> dict:
    left, right = (pd.read_parquet(root / f"feature_scale_{e}.parquet") for e in (a, b))
    for frame in (left, right):  # DuckDB returns microseconds, Spark nanoseconds: same instants
        frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[us, UTC]")
    features = [c for c in left.columns if c not in ("customer_id", "event_timestamp")]
    keys_equal = left[["customer_id", "event_timestamp"]].equals(right[["customer_id", "event_timestamp"]])
    x, y = left[features].to_numpy(float), right[features].to_numpy(float)
    return {"same_rows": bool(len(left) == len(right) and keys_equal),
            "same_nulls": bool(np.array_equal(np.isnan(x), np.isnan(y))),
            "max_abs_diff": float(np.nanmax(np.abs(x - y), initial=0.0))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", default="10000,40000", help="comma-separated customers per snapshot")
    parser.add_argument("--engines", default="duckdb,spark")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="one sub-folder per size (default: temporary)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per engine run before it counts as failed")
    args = parser.parse_args(argv)
    sizes = sorted(int(float(s)) for s in args.customers.split(","))
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if any(s < 100 for s in sizes) or not set(engines) <= {"duckdb", "spark"}:
        parser.error("--customers must be >= 100 each; --engines from duckdb,spark")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="feature_scale_"))
    report: dict = {"cores": os.cpu_count(), "spark_master": os.environ.get("CDP_SPARK_MASTER", "local[2]"),
                    "sizes": []}
    for size in sizes:
        root = workdir / f"c{size}"
        entry = build(root, size, args.seed)
        print(f"{entry['entity_rows']:>9} entity rows x 7 views ({size} customers x {SNAPSHOTS} snapshots) in {root}",
              flush=True)
        for engine in engines:
            entry[engine] = run_engine(root, engine, args.timeout)
            if "failed" in entry[engine]:
                print(f"  {engine:6} FAILED ({entry[engine]['failed']}) after {entry[engine]['seconds']} s, "
                      f"peak {entry[engine]['peak_tree_rss_mb']} MB", flush=True)
                continue
            print(f"  {engine:6} {entry[engine]['seconds']:8.1f} s (apply {entry[engine]['apply_seconds']} s, join "
                  f"{entry[engine]['join_seconds']} s)   peak {entry[engine]['peak_tree_rss_mb']:6d} MB   "
                  f"rows {entry[engine]['rows']}", flush=True)
        if len(engines) == 2 and not any("failed" in entry[e] for e in engines):
            entry["agreement"] = same_frames(root, *engines)
            print(f"  same training set: {entry['agreement']}", flush=True)
        report["sizes"].append(entry)

    print(f"\n{'entity rows':>11} " + " ".join(f"{e + ' s':>10} {e + ' join s':>13} {e + ' MB':>10}" for e in engines))
    for entry in report["sizes"]:
        print(f"{entry['entity_rows']:>11} " + " ".join(
            f"{entry[e]['seconds']:>10} {entry[e].get('join_seconds', entry[e].get('failed')):>13} "
            f"{entry[e]['peak_tree_rss_mb']:>10}" for e in engines))
    out = finish_report(report, "feature_scale", engines, "entity_rows", "join_seconds", "join time vs entity rows")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
