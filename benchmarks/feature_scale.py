"""Feature building and point-in-time feature retrieval vs data size, embedded DuckDB vs Spark.

    nice -n 10 .venv/bin/python benchmarks/feature_scale.py --stage build --records 100000,1000000 --engines duckdb,spark
    nice -n 10 .venv/bin/python benchmarks/feature_scale.py --stage join --customers 10000,40000 --engines duckdb,spark

`--stage build` (default): building the feature views themselves (features/views.py, `cdp
features` without the Feast apply/materialize) from ~N linkable source records. For each size:
synthetic data sized like benchmarks/scale_out.py (~55 source records per person), ingest, a full
DuckDB `resolve` (not measured), then per engine in its own child process
(`CDP_FEATURE_ENGINE=duckdb|spark`, Spark `local[2]` unless CDP_SPARK_MASTER says otherwise): the
data end + every monthly snapshot of the 7 views into features/*.parquet. DuckDB: `load_timeline`
(pandas) + the SQL in process; Spark: the same SQL on Spark from the staged Parquet (JVM start
included, reported apart). Reported: wall time of the child, peak memory (largest sum of RSS over
the child and its descendants, the JVM included, sampled every 0.2 s), rows, and whether both
engines wrote the same tables (rows, nulls, max abs diff). Growth exponent = log-log slope of
build time vs source records; writes benchmarks/results/feature_build_<time>.json.

`--stage join`: a training-set build through the offline store. For each size: synthetic feature
tables in a fresh workspace (the seven views of features/definitions.py, every customer at every
monthly snapshot, ~5% nulls), then per engine (`CDP_OFFLINE_STORE=duckdb|spark`), in its own child
process: `feast apply` of the definitions, then `get_historical_features` of the churn_v1
FeatureService (7 views, 53 features) for every (customer, snapshot + 1 day) row, i.e. the
churn training set. Reported: wall time of the child, the join alone (`join s`: entity frame in,
training set out), peak memory as above, and whether both engines returned the same frame; the
log-log slope of join time vs entity rows per engine; writes benchmarks/results/feature_scale_<time>.json.
`--spark-output training` (default) runs `cdp.training.train.build_training_set`, what `cdp train` runs
(on Spark: entity rows staged as Parquet read by Spark, the joined set written by the executors);
`pandas` = Feast's `to_df()` with a pandas entity frame (collects into the driver); `parquet` = entity
rows read by Spark from Parquet and `RetrievalJob.to_spark_df()` written as Parquet part files.
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

import identity_scale  # noqa: E402  (the resolve child script)
import scale_out  # noqa: E402  (data sizing)
from scale_out import _tree_rss, finish_report  # noqa: E402  (same measuring as the identity benchmark)

SNAPSHOTS = 12


def build(root: Path, customers: int, seed: int) -> dict:
    """Feature Parquet files for `customers` x SNAPSHOTS monthly snapshots; entity rows = the product."""
    from cdp.featurestore.store import repo_definitions
    from cdp.workspace import Workspace

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
    entities = frame.assign(
        event_timestamp=(frame["event_timestamp"] + pd.Timedelta(days=1)).astype("datetime64[us, UTC]")
    )
    entities.to_parquet(root / "entities.parquet", index=False)
    return {
        "customers": customers,
        "snapshots": SNAPSHOTS,
        "entity_rows": len(entities),
        "feature_rows_per_view": len(frame),
    }


CHILD = r"""
import json, os, sys, time, warnings
warnings.filterwarnings("ignore")
from pathlib import Path
import pandas as pd
from cdp.workspace import Workspace
from cdp.featurestore.store import apply_definitions
root, out = Path(sys.argv[1]), Path(sys.argv[2])
ws = Workspace(root)
started = time.perf_counter()
store = apply_definitions(ws)
applied = time.perf_counter() - started
entities = pd.read_parquet(root / "entities.parquet")
started = time.perf_counter()
spark_output = os.environ.get("FEATURE_SCALE_OUTPUT") == "parquet" and store.config.offline_store.type != "duckdb"
if spark_output:  # the entity rows read by Spark from Parquet, not a pandas frame embedded in the query plan
    from feast.infra.offline_stores.contrib.spark_offline_store.spark import get_spark_session_or_start_new_with_repoconfig
    entities = get_spark_session_or_start_new_with_repoconfig(store.config.offline_store).read.parquet(
        str(root / "entities.parquet"))
if os.environ.get("FEATURE_SCALE_OUTPUT") == "training":  # what `cdp train` runs, on either store
    from cdp.models.churn import CHURN
    from cdp.training.train import build_training_set
    frame = build_training_set(store, CHURN, entities)
    joined = time.perf_counter() - started
    frame.to_parquet(out.with_suffix(".parquet"))
    rows = len(frame)
    job = None
else:
    job = store.get_historical_features(entity_df=entities, features=store.get_feature_service("churn_v1"))
if job is None:
    pass
elif spark_output:
    # the training set stays in Spark and is written as Parquet part files: nothing collected to the driver
    import pyarrow.dataset as ds
    job.to_spark_df().write.mode("overwrite").parquet(str(root / "training_set_spark"))
    joined = time.perf_counter() - started
    rows = ds.dataset(root / "training_set_spark", format="parquet").count_rows()
else:
    frame = job.to_df()
    joined = time.perf_counter() - started
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame.sort_values(["customer_id", "event_timestamp"], ignore_index=True).to_parquet(out.with_suffix(".parquet"))
    rows = len(frame)
out.write_text(json.dumps({"apply_seconds": round(applied, 2), "join_seconds": round(joined, 2), "rows": rows,
                           "store": store.config.offline_store.type,
                           "output": os.environ.get("FEATURE_SCALE_OUTPUT", "pandas")}))
"""


def run_engine(
    root: Path,
    engine: str,
    timeout: float = 600,
    script: str | None = None,
    env_key: str = "CDP_OFFLINE_STORE",
    name: str = "feature_scale",
) -> dict:
    """One engine in a child process. A child that fails or outlives `timeout` (Spark's JVM can
    hang after an OutOfMemoryError) is stopped with its process tree and reported, not raised."""
    import psutil

    result = root / f"{name}_{engine}.json"
    env = {**os.environ, env_key: engine}
    env.setdefault("CDP_SPARK_MASTER", "local[2]")
    log = open(root / f"{name}_{engine}.log", "w")  # noqa: SIM115 (open for the child's lifetime) a file, not a pipe: a full pipe would block the child
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", script or CHILD, str(root), str(result), engine],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
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
        text = (root / f"{name}_{engine}.log").read_text()
        reason = (
            "OutOfMemoryError"
            if "OutOfMemoryError" in text
            else f"timeout {timeout:.0f} s"
            if child.returncode in (-9, 137)
            else f"exit {child.returncode}"
        )
        return {"seconds": round(seconds, 1), "failed": reason, "peak_tree_rss_mb": round(peak / 2**20)}
    return {"seconds": round(seconds, 1), **json.loads(result.read_text()), "peak_tree_rss_mb": round(peak / 2**20)}


BUILD_CHILD = r"""
import json, shutil, sys, time, warnings
warnings.filterwarnings("ignore")
from pathlib import Path
from cdp.workspace import Workspace
from cdp.features.build import build_features
from cdp.features.views import data_end, snapshot_times
root, out, engine = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
ws = Workspace(root)
shutil.rmtree(ws.features, ignore_errors=True)
info, started = {}, time.perf_counter()
if engine == "spark":
    from cdp.engines.spark import spark_session
    from cdp.features.spark import spark_data_end
    spark_session()
    info["session_seconds"] = round(time.perf_counter() - started, 2)
    timeline, end = None, spark_data_end(ws)
else:
    from cdp.features.timeline import load_timeline
    timeline = load_timeline(ws)
    end = data_end(timeline)
    info["load_timeline_seconds"] = round(time.perf_counter() - started, 2)
snapshots = snapshot_times(end)
rows = build_features(ws, timeline, snapshots, engine=engine)
info["build_seconds"] = round(time.perf_counter() - started, 2)
target = root / f"features_{engine}"
shutil.rmtree(target, ignore_errors=True)
ws.features.rename(target)
out.write_text(json.dumps({**info, "snapshots": len(snapshots), "rows_per_view": rows}))
"""


def prepare_sources(root: Path, records: int, seed: int, keep: bool) -> dict:
    """Generated, ingested and resolved (DuckDB, child process, not measured) source data."""
    info = scale_out.build(root, records, seed, keep)
    if not (keep and (root / "identity" / "identity_map.parquet").exists()):
        started = time.perf_counter()
        identity_scale._stage(root, "full")
        info["resolve_seconds"] = round(time.perf_counter() - started, 1)
    return info


def same_tables(root: Path, a: str, b: str) -> dict:
    """Feature tables written by two engines: same rows (in order), same nulls, max abs diff."""
    report = {"same_rows": True, "same_nulls": True, "same_dtypes": True, "max_abs_diff": 0.0}
    for path in sorted((root / f"features_{a}").glob("*.parquet")):
        left, right = pd.read_parquet(path), pd.read_parquet(root / f"features_{b}" / path.name)
        keys = ["customer_id", "event_timestamp"]
        report["same_rows"] &= bool(len(left) == len(right) and left[keys].equals(right[keys]))
        report["same_dtypes"] &= left.dtypes.to_dict() == right.dtypes.to_dict()
        if not report["same_rows"] or list(left.columns) != list(right.columns):
            report["same_rows"] = False
            continue
        x, y = left.drop(columns=keys).to_numpy(float), right.drop(columns=keys).to_numpy(float)
        report["same_nulls"] &= bool(np.array_equal(np.isnan(x), np.isnan(y)))
        report["max_abs_diff"] = max(report["max_abs_diff"], float(np.nanmax(np.abs(x - y), initial=0.0)))
    return report


def main_build(args, engines: list[str]) -> int:
    sizes = sorted(int(float(s)) for s in args.records.split(","))
    if any(s < 1000 for s in sizes):
        raise SystemExit("--records must be >= 1000 each")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="feature_build_"))
    report: dict = {
        "stage": "build",
        "cores": os.cpu_count(),
        "spark_master": os.environ.get("CDP_SPARK_MASTER", "local[2]"),
        "spark_driver_memory": os.environ.get("CDP_SPARK_DRIVER_MEMORY", "4g"),
        "sizes": [],
    }
    for size in sizes:
        root = workdir / f"n{size}"
        entry = {"target_records": size, **prepare_sources(root, size, args.seed, args.keep)}
        print(
            f"{entry['linkable_records']:>9} linkable source records ({entry['people']} people) in {root}", flush=True
        )
        for engine in engines:
            entry[engine] = run_engine(root, engine, args.timeout, BUILD_CHILD, "CDP_FEATURE_ENGINE", "feature_build")
            if "failed" in entry[engine]:
                print(
                    f"  {engine:6} FAILED ({entry[engine]['failed']}) after {entry[engine]['seconds']} s, "
                    f"peak {entry[engine]['peak_tree_rss_mb']} MB",
                    flush=True,
                )
                continue
            extra = entry[engine].get("session_seconds", entry[engine].get("load_timeline_seconds"))
            what = "JVM start" if engine == "spark" else "load_timeline"
            print(
                f"  {engine:6} {entry[engine]['seconds']:8.1f} s (build {entry[engine]['build_seconds']} s, {what} "
                f"{extra} s)   peak {entry[engine]['peak_tree_rss_mb']:6d} MB   rows/view "
                f"{max(entry[engine]['rows_per_view'].values())}",
                flush=True,
            )
        if len(engines) == 2 and not any("failed" in entry[e] for e in engines):
            entry["agreement"] = same_tables(root, *engines)
            print(f"  same feature tables: {entry['agreement']}", flush=True)
        report["sizes"].append(entry)

    print(f"\n{'source records':>14} {'rows/view':>10} " + " ".join(f"{e + ' s':>10} {e + ' MB':>10}" for e in engines))
    for entry in report["sizes"]:
        rows = next((max(entry[e]["rows_per_view"].values()) for e in engines if "rows_per_view" in entry[e]), "-")
        print(
            f"{entry['linkable_records']:>14} {rows:>10} "
            + " ".join(
                f"{entry[e]['seconds'] if 'failed' not in entry[e] else entry[e]['failed']:>10} "
                f"{entry[e]['peak_tree_rss_mb']:>10}"
                for e in engines
            )
        )
    out = finish_report(report, "feature_build", engines, "linkable_records", "seconds", "build time vs source records")
    print(f"written to {out}")
    return 0


def _training_set(root: Path, engine: str) -> pd.DataFrame:
    path = root / f"feature_scale_{engine}.parquet"
    if engine == "spark" and not path.exists():  # --spark-output parquet: Spark's part files
        frame = pd.read_parquet(root / "training_set_spark")
        stamps = frame["event_timestamp"]
        frame["event_timestamp"] = stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps
        return frame.sort_values(["customer_id", "event_timestamp"], ignore_index=True)
    return pd.read_parquet(path)


def same_frames(root: Path, a: str, b: str) -> dict:
    left, right = (_training_set(root, e) for e in (a, b))
    for frame in (left, right):  # DuckDB returns microseconds, Spark nanoseconds: same instants
        frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[us, UTC]")
    right = right[list(left.columns)]
    features = [c for c in left.columns if c not in ("customer_id", "event_timestamp")]
    keys_equal = left[["customer_id", "event_timestamp"]].equals(right[["customer_id", "event_timestamp"]])
    x, y = left[features].to_numpy(float), right[features].to_numpy(float)
    return {
        "same_rows": bool(len(left) == len(right) and keys_equal),
        "same_nulls": bool(np.array_equal(np.isnan(x), np.isnan(y))),
        "max_abs_diff": float(np.nanmax(np.abs(x - y), initial=0.0)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stage",
        choices=("build", "join"),
        default="build",
        help="build: the feature views from source records; join: training sets from feature tables",
    )
    parser.add_argument("--records", default="100000,1000000", help="build: comma-separated linkable source records")
    parser.add_argument("--customers", default="10000,40000", help="join: comma-separated customers per snapshot")
    parser.add_argument("--engines", default="duckdb,spark")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="one sub-folder per size (default: temporary)")
    parser.add_argument("--keep", action="store_true", help="build: reuse generated + resolved data in --workdir")
    parser.add_argument(
        "--spark-output",
        choices=("training", "pandas", "parquet"),
        default="training",
        help="join: training = cdp.training.train.build_training_set, what `cdp train` runs (on Spark: "
        "entity rows staged as Parquet, the result written by the executors); pandas = Feast's "
        "RetrievalJob.to_df() with a pandas entity frame (collects to the driver); parquet = "
        "Spark reads the entity Parquet, to_spark_df() written as Parquet (nothing collected)",
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds per engine run before it counts as failed")
    args = parser.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not set(engines) <= {"duckdb", "spark"}:
        parser.error("--engines from duckdb,spark")
    if args.stage == "build":
        return main_build(args, engines)
    sizes = sorted(int(float(s)) for s in args.customers.split(","))
    if any(s < 100 for s in sizes):
        parser.error("--customers must be >= 100 each")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="feature_scale_"))
    report: dict = {
        "stage": "join",
        "cores": os.cpu_count(),
        "spark_master": os.environ.get("CDP_SPARK_MASTER", "local[2]"),
        "spark_output": args.spark_output,
        "sizes": [],
    }
    for size in sizes:
        root = workdir / f"c{size}"
        entry = build(root, size, args.seed)
        print(
            f"{entry['entity_rows']:>9} entity rows x 7 views ({size} customers x {SNAPSHOTS} snapshots) in {root}",
            flush=True,
        )
        for engine in engines:
            os.environ["FEATURE_SCALE_OUTPUT"] = args.spark_output
            entry[engine] = run_engine(root, engine, args.timeout)
            if "failed" in entry[engine]:
                print(
                    f"  {engine:6} FAILED ({entry[engine]['failed']}) after {entry[engine]['seconds']} s, "
                    f"peak {entry[engine]['peak_tree_rss_mb']} MB",
                    flush=True,
                )
                continue
            print(
                f"  {engine:6} {entry[engine]['seconds']:8.1f} s (apply {entry[engine]['apply_seconds']} s, join "
                f"{entry[engine]['join_seconds']} s)   peak {entry[engine]['peak_tree_rss_mb']:6d} MB   "
                f"rows {entry[engine]['rows']}",
                flush=True,
            )
        if len(engines) == 2 and not any("failed" in entry[e] for e in engines):
            entry["agreement"] = same_frames(root, *engines)
            print(f"  same training set: {entry['agreement']}", flush=True)
        report["sizes"].append(entry)

    print(f"\n{'entity rows':>11} " + " ".join(f"{e + ' s':>10} {e + ' join s':>13} {e + ' MB':>10}" for e in engines))
    for entry in report["sizes"]:
        print(
            f"{entry['entity_rows']:>11} "
            + " ".join(
                f"{entry[e]['seconds']:>10} {entry[e].get('join_seconds', entry[e].get('failed')):>13} "
                f"{entry[e]['peak_tree_rss_mb']:>10}"
                for e in engines
            )
        )
    out = finish_report(report, "feature_scale", engines, "entity_rows", "join_seconds", "join time vs entity rows")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
