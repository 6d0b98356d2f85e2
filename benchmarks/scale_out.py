"""Identity resolution vs data size on the embedded (DuckDB) and Spark engines: where to switch.

    nice -n 10 python benchmarks/scale_out.py --records 100000,1000000 --engines duckdb,spark
    nice -n 10 python benchmarks/scale_out.py --records 100000,1000000,5000000 --workdir /tmp/scale_out --keep

For each size: synthetic data with ~N linkable source records (benchmarks/identity_scale.py's
sizing and counting helpers), ingest once, then a full `resolve` per engine, each in its own child
process (`CDP_IDENTITY_ENGINE=duckdb|spark`, Spark `local[2]` unless CDP_SPARK_MASTER says
otherwise). Wall time of the child; peak memory = the largest sum of RSS over the child and all
its descendants (Spark's JVM is a child of the Python process), sampled every 0.2 s. Also the
pairwise F1 between the engines' clusterings and against truth. Prints a table, the log-log slope
of time vs records per engine (growth exponent), and one JSON report; writes it to
benchmarks/results/scale_out_<time>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
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

import identity_scale  # noqa: E402  (data sizing, record counts, the resolve child script, F1 vs truth)

PROFILE_TABLES = ("crm_contacts", "loyalty_members", "online_accounts")


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_resolve(root: Path, engine: str) -> dict:
    """Full resolve of `root` on `engine` in a child process: seconds, peak tree RSS, summary."""
    import psutil

    for stale in ("identity_map.parquet", "identifier_map.parquet", "id_history.parquet", "splink_model.json"):
        (root / "identity" / stale).unlink(missing_ok=True)
    result = root / f"scale_out_{engine}.json"
    env = {**os.environ, "CDP_IDENTITY_ENGINE": engine}
    env.setdefault("CDP_SPARK_MASTER", "local[2]")
    log = open(root / f"scale_out_{engine}.log", "w")  # noqa: SIM115 (open for the child's lifetime) a file, not a pipe: a full pipe would block the child
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", identity_scale.STAGE, str(root), "full", str(result)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proc, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        try:
            peak = max(peak, _tree_rss(proc))
        except psutil.Error:
            pass
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    log.close()
    if child.returncode != 0:
        raise RuntimeError(f"{engine} resolve failed:\n{(root / f'scale_out_{engine}.log').read_text()[-3000:]}")
    inner = json.loads(result.read_text())
    shutil.copy(root / "identity" / "identity_map.parquet", root / f"identity_map_{engine}.parquet")
    return {
        "seconds": round(seconds, 1),
        "resolve_seconds": inner["seconds"],
        "peak_tree_rss_mb": round(peak / 2**20),
        "summary": inner["summary"],
        "pairwise_f1_vs_truth": identity_scale._f1(root),
    }


def build(root: Path, records: int, seed: int, keep: bool) -> dict:
    from cdp import pipeline
    from cdp.workspace import Workspace

    ws = Workspace(root)
    people = max(100, math.ceil(records / identity_scale.RECORDS_PER_PERSON))
    info: dict = {"people": people}
    if not (keep and (ws.staged / "orders.parquet").exists()):
        started = time.perf_counter()
        pipeline.generate(ws, people, seed=seed)
        pipeline.ingest(ws)
        info["generate_ingest_seconds"] = round(time.perf_counter() - started, 1)
    counts = identity_scale.count_records(ws.staged)
    info["linkable_records"] = sum(counts.values())
    info["profile_records"] = sum(counts.get(t, 0) for t in PROFILE_TABLES)  # what Splink scores
    return info


def agreement(root: Path, a: str, b: str) -> float:
    from cdp.identity.evaluate import cluster_metrics

    key = ["source_table", "source_key"]
    left, right = (pd.read_parquet(root / f"identity_map_{e}.parquet", columns=[*key, "customer_id"]) for e in (a, b))
    joined = left.merge(right, on=key, how="outer", suffixes=("_a", "_b"))
    return round(
        cluster_metrics(pd.DataFrame({"pred": joined["customer_id_b"], "true": joined["customer_id_a"]})).pairwise_f1, 6
    )


def growth_exponent(points: list[tuple[int, float]]) -> float | None:
    """Slope of log(seconds) vs log(records): 1.0 = linear; needs two sizes."""
    if len(points) < 2:
        return None
    x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return round(float(np.polyfit(x, y, 1)[0]), 3)


def finish_report(report: dict, name: str, engines: list[str], size_key: str, seconds_key: str, what: str) -> Path:
    """Growth exponent per engine over the sizes it finished (printed), then the report as
    benchmarks/results/<name>_<time>.json; returns that path."""
    report["growth_exponent"] = {
        e: growth_exponent([(s[size_key], s[e][seconds_key]) for s in report["sizes"] if seconds_key in s[e]])
        for e in engines
    }
    print(
        f"growth exponent (log-log slope of {what}):",
        ", ".join(f"{e} {v}" for e, v in report["growth_exponent"].items()),
    )
    out = ROOT / "benchmarks" / "results" / f"{name}_{time.strftime('%Y%m%d_%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", default="100000,1000000", help="comma-separated target linkable records")
    parser.add_argument("--engines", default="duckdb,spark")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="one sub-folder per size (default: temporary)")
    parser.add_argument("--keep", action="store_true", help="reuse generated data in --workdir if present")
    args = parser.parse_args(argv)
    sizes = sorted(int(float(s)) for s in args.records.split(","))
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if any(s < 1000 for s in sizes) or not set(engines) <= {"duckdb", "spark"}:
        parser.error("--records must be >= 1000 each; --engines from duckdb,spark")

    import warnings

    warnings.filterwarnings("ignore")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="scale_out_"))
    report: dict = {
        "cores": os.cpu_count(),
        "spark_master": os.environ.get("CDP_SPARK_MASTER", "local[2]"),
        "sizes": [],
    }
    for size in sizes:
        root = workdir / f"n{size}"
        entry = {"target_records": size, **build(root, size, args.seed, args.keep)}
        print(
            f"{entry['linkable_records']:>9} linkable records ({entry['profile_records']} profile records, "
            f"{entry['people']} people) in {root}",
            flush=True,
        )
        for engine in engines:
            entry[engine] = run_resolve(root, engine)
            print(
                f"  {engine:6} {entry[engine]['seconds']:8.1f} s   peak {entry[engine]['peak_tree_rss_mb']:6d} MB   "
                f"customers {entry[engine]['summary']['customers']}   F1 vs truth "
                f"{entry[engine]['pairwise_f1_vs_truth']}",
                flush=True,
            )
        if len(engines) == 2:
            entry["pairwise_f1_between_engines"] = agreement(root, *engines)
            print(f"  clusters agree between engines: pairwise F1 {entry['pairwise_f1_between_engines']}", flush=True)
        report["sizes"].append(entry)

    print(f"\n{'records':>10} " + " ".join(f"{e + ' s':>10} {e + ' MB':>10}" for e in engines))
    for entry in report["sizes"]:
        print(
            f"{entry['linkable_records']:>10} "
            + " ".join(f"{entry[e]['seconds']:>10} {entry[e]['peak_tree_rss_mb']:>10}" for e in engines)
        )
    out = finish_report(report, "scale_out", engines, "linkable_records", "seconds", "time vs records")
    print(json.dumps(report, indent=1, default=str))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
