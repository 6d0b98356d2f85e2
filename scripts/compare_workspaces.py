"""Compare two workspaces made by `cdp demo` on the same seed (e.g. before and after a refactor).

    python scripts/compare_workspaces.py BEFORE_HOME AFTER_HOME

Every Parquet table under staged/, identity/ and features/ is compared row for row (sorted by all
columns, floats within 1e-9; columns that hold run times or MLflow ids are skipped), and the demo
summaries' metrics are compared. Exit 1 and a list of differences when anything differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

FOLDERS = ("staged", "identity", "features")
VOLATILE = ("scored_at", "model_version", "run_id", "created_at", "completed_at")  # differ by run, not by data
SUMMARY_SKIP = ("seconds", "mlflow", "url", "served", "run_id", "scoring_run", "home", "model_version")


def _stable(frame: pd.DataFrame) -> pd.DataFrame:
    kept = frame[[c for c in frame.columns if not any(v in c for v in VOLATILE)]]
    kept = kept.reset_index(drop=True)
    order = sorted(kept.columns)
    if not order:
        return kept
    # sort on floats rounded to 1e-9: DuckDB's parallel sums differ in the last bits (1e-16) from run
    # to run, which must not reorder rows (the comparison itself allows 1e-9)
    keys = kept[order].apply(lambda c: c.round(9) if pd.api.types.is_float_dtype(c) else c)
    return kept[order].iloc[keys.sort_values(order, kind="stable", na_position="last").index].reset_index(drop=True)


def compare_tables(before: Path, after: Path) -> list[str]:
    differences = []
    for folder in FOLDERS:
        names = {p.relative_to(before) for p in (before / folder).rglob("*.parquet")}
        names |= {p.relative_to(after) for p in (after / folder).rglob("*.parquet")}
        for name in sorted(names):
            if not (before / name).exists() or not (after / name).exists():
                differences.append(f"{name}: only in {'after' if (after / name).exists() else 'before'}")
                continue
            left, right = _stable(pd.read_parquet(before / name)), _stable(pd.read_parquet(after / name))
            try:
                pd.testing.assert_frame_equal(left, right, check_dtype=False, rtol=1e-9, atol=1e-9)
            except AssertionError as error:
                differences.append(f"{name}: {str(error).splitlines()[0]} ({len(left)} vs {len(right)} rows)")
    return differences


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def compare_summaries(before: Path, after: Path) -> list[str]:
    path = Path("reports") / "demo_summary.json"
    left = _flatten(json.loads((before / path).read_text()))
    right = _flatten(json.loads((after / path).read_text()))
    return [
        f"demo_summary {key}: {left.get(key)} vs {right.get(key)}"
        for key in sorted(set(left) | set(right))
        if not any(s in key for s in SUMMARY_SKIP) and left.get(key) != right.get(key)
    ]


def main() -> int:
    before, after = (Path(arg).resolve() for arg in sys.argv[1:3])
    differences = compare_tables(before, after) + compare_summaries(before, after)
    tables = sum(1 for folder in FOLDERS for _ in (before / folder).rglob("*.parquet"))
    print(f"{tables} tables and the demo summary compared: {len(differences)} differences")
    for line in differences:
        print(" ", line)
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
