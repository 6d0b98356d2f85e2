"""Identity resolution quality against a ground truth (synthetic truth/ or FEBRL links).

In:  a frame of records with a predicted cluster (`pred`, null = unlinked -> a singleton) and a
     true entity (`true`). `cluster_metrics` turns it into pairwise precision/recall/F1 over
     record pairs, B-cubed precision/recall, over-merged and split entities and duplicate rates.
     `evaluate_workspace` builds that frame from a workspace: staged tables (`source_row`),
     `truth/record_persons.parquet` (source_table, row -> person_id) and
     `identity/identity_map.parquet`.
     `recoverable_ceiling` is the best any resolver could do on the same records (see there).
Out: plain dicts of counts and ratios: no record values, so safe to print and log.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cdp.workspace import Workspace

PROFILE_TABLES = ("crm_contacts", "loyalty_members", "online_accounts")
DEFAULT_TABLES = (*PROFILE_TABLES, "orders")
ORDER_IDENTIFIERS = ("card_id", "phone", "account_id", "email")
KEYS = {
    "crm_contacts": "record_id",
    "loyalty_members": "card_id",
    "online_accounts": "account_id",
    "orders": "order_id",
    "service_interactions": "interaction_id",
    "marketing_sends": "send_id",
    "web_events": "event_id",
}


def _pairs(sizes: pd.Series | np.ndarray) -> int:
    s = np.asarray(sizes, dtype=np.int64)
    return int((s * (s - 1) // 2).sum())


@dataclass(frozen=True)
class ClusterMetrics:
    records: int
    true_entities: int
    predicted_clusters: int
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f1: float
    bcubed_precision: float
    bcubed_recall: float
    overmerged_entities: int  # entities sharing a predicted cluster with another entity
    split_entities: int  # entities whose records are spread over >1 predicted clusters
    overmerged_clusters: int  # predicted clusters holding >1 entity

    def to_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def cluster_metrics(frame: pd.DataFrame) -> ClusterMetrics:
    """Metrics of predicted clusters `pred` (null -> singleton) against true entities `true`."""
    pred = frame["pred"].astype(object).copy()
    missing = pred.isna().to_numpy()
    pred[missing] = ["__single__" + str(i) for i in np.flatnonzero(missing)]
    codes = pd.DataFrame({"pred": pd.factorize(pred)[0], "true": pd.factorize(frame["true"])[0]})
    n = len(codes)
    cell = codes.groupby(["pred", "true"]).size().rename("n").reset_index()
    pred_size = codes.groupby("pred").size()
    true_size = codes.groupby("true").size()
    tp, pp, tt = _pairs(cell["n"]), _pairs(pred_size), _pairs(true_size)
    precision = tp / pp if pp else 1.0
    recall = tp / tt if tt else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    sq = cell["n"].to_numpy(float) ** 2
    b_prec = float((sq / pred_size.loc[cell["pred"]].to_numpy()).sum() / n) if n else 1.0
    b_rec = float((sq / true_size.loc[cell["true"]].to_numpy()).sum() / n) if n else 1.0
    entities_per_pred = cell.groupby("pred")["true"].nunique()
    mixed = entities_per_pred[entities_per_pred > 1].index
    preds_per_true = cell.groupby("true")["pred"].nunique()
    return ClusterMetrics(
        records=n,
        true_entities=len(true_size),
        predicted_clusters=len(pred_size),
        pairwise_precision=float(precision),
        pairwise_recall=float(recall),
        pairwise_f1=float(f1),
        bcubed_precision=b_prec,
        bcubed_recall=b_rec,
        overmerged_entities=int(cell.loc[cell["pred"].isin(mixed), "true"].nunique()),
        split_entities=int((preds_per_true > 1).sum()),
        overmerged_clusters=len(mixed),
    )


def truth_frame(ws: Workspace, tables: tuple[str, ...] = DEFAULT_TABLES) -> pd.DataFrame:
    """(source_table, source_key, true person, predicted customer_id) for every staged record
    of `tables`, matched to truth on (source_table, source_row == row)."""
    truth = pd.read_parquet(ws.truth / "record_persons.parquet", columns=["source_table", "row", "person_id"])
    identity = pd.read_parquet(ws.path("identity_map"), columns=["source_table", "source_key", "customer_id"])
    frames = []
    for table in tables:
        path = ws.staged / f"{table}.parquet"
        if not path.exists():
            continue
        identifiers = [c for c in ORDER_IDENTIFIERS if table == "orders"]
        staged = pd.read_parquet(path, columns=[KEYS[table], "source_row", *identifiers])
        frames.append(
            pd.DataFrame(
                {
                    "source_table": table,
                    "source_key": staged[KEYS[table]].astype(str),
                    "row": staged["source_row"].to_numpy(),
                    # an order with no card, phone, account or email: nothing can link it
                    "anonymous": staged[identifiers].isna().all(axis=1).to_numpy() if identifiers else False,
                }
            )
        )
    records = pd.concat(frames, ignore_index=True)
    records = records.merge(truth, on=["source_table", "row"], how="inner")
    records = records.merge(identity, on=["source_table", "source_key"], how="left")
    return records.rename(columns={"person_id": "true", "customer_id": "pred"})


def duplicate_rates(frame: pd.DataFrame) -> dict[str, float]:
    """Share of profile records that are duplicates of another record: found vs true."""
    prof = frame[frame["source_table"].isin(PROFILE_TABLES)]
    if prof.empty:
        return {"duplicate_rate_true": 0.0, "duplicate_rate_found": 0.0}
    found_clusters = prof["pred"].nunique() + int(prof["pred"].isna().sum())
    return {
        "duplicate_rate_true": round(1 - prof["true"].nunique() / len(prof), 5),
        "duplicate_rate_found": round(1 - found_clusters / len(prof), 5),
    }


def recoverable_ceiling(ws: Workspace, frame: pd.DataFrame) -> pd.Series:
    """Clusters of an oracle limited to links the data supports (an upper bound, so optimistic):
    it knows the truth but joins two records of one person only through an identifier node
    (normalized card, account, email, phone, device, as the resolver sees them) that no other
    person's record carries, in any linkable table; and it joins all of a person's profile records
    (as if names, dates of birth and postcodes always sufficed). An order whose only identifier
    is a store placeholder, a household's home phone or a number seen on no other record of its
    person stays apart: nothing in the data says whose it is.

    `frame`: `truth_frame` rows. Returns the oracle's cluster per row (aligned to `frame`)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from cdp.identity.links import record_identifiers

    truth = pd.read_parquet(ws.truth / "record_persons.parquet", columns=["source_table", "row", "person_id"])
    links = record_identifiers(ws)
    rows = []
    for table in links["source_table"].unique():
        staged = pd.read_parquet(ws.staged / f"{table}.parquet", columns=[KEYS[table], "source_row"])
        rows.append(
            pd.DataFrame(
                {
                    "source_table": table,
                    "source_key": staged[KEYS[table]].astype(str),
                    "row": staged["source_row"].to_numpy(),
                }
            )
        )
    owner = pd.concat(rows, ignore_index=True).merge(truth, on=["source_table", "row"])
    owner["record"] = owner["source_table"] + "|" + owner["source_key"]
    links = links.assign(record=links["source_table"] + "|" + links["source_key"])
    links = links.merge(owner[["record", "person_id"]], on="record")
    persons = links.groupby("node")["person_id"].nunique()
    links = links[links["node"].map(persons).eq(1).to_numpy()]
    records = pd.Index(
        pd.unique(
            np.concatenate([(frame["source_table"] + "|" + frame["source_key"]).to_numpy(), links["record"].to_numpy()])
        )
    )
    nodes, node_index = np.unique(links["node"].to_numpy(), return_inverse=True)
    profile = frame[frame["source_table"].isin(PROFILE_TABLES)]
    people, person_index = np.unique(profile["true"].astype(str).to_numpy(), return_inverse=True)
    n, m = len(records), len(nodes)
    a = np.concatenate(
        [
            records.get_indexer(links["record"]),
            records.get_indexer(profile["source_table"] + "|" + profile["source_key"]),
        ]
    )
    b = np.concatenate([n + node_index, n + m + person_index])
    size = n + m + len(people)
    _, component = connected_components(
        coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(size, size)), directed=False
    )
    own = records.get_indexer(frame["source_table"] + "|" + frame["source_key"])
    return pd.Series(component[own], index=frame.index)


def evaluate_workspace(ws: Workspace, tables: tuple[str, ...] = DEFAULT_TABLES, ceiling: bool = True) -> dict:
    """All metrics for the workspace's identity_map against truth/: overall, profile records only."""
    if not (ws.truth / "record_persons.parquet").exists():
        raise FileNotFoundError(f"no ground truth in {ws.truth}: evaluation needs synthetic data")
    frame = truth_frame(ws, tables)
    out = {
        "tables": list(tables),
        "overall": cluster_metrics(frame).to_dict(),
        "profile_records": cluster_metrics(frame[frame["source_table"].isin(PROFILE_TABLES)]).to_dict(),
        "identified_records": cluster_metrics(frame[~frame["anonymous"]]).to_dict(),
        "anonymous_records": int(frame["anonymous"].sum()),
        "unlinked_records": int(frame["pred"].isna().sum()),
    }
    out.update(duplicate_rates(frame))
    if ceiling:
        oracle = frame.assign(pred=recoverable_ceiling(ws, frame))
        scopes = {
            "overall": oracle,
            "identified_records": oracle[~oracle["anonymous"]],
            "profile_records": oracle[oracle["source_table"].isin(PROFILE_TABLES)],
        }
        out["recoverable_ceiling"] = {
            name: {
                k: v
                for k, v in cluster_metrics(sub).to_dict().items()
                if k in ("pairwise_recall", "pairwise_f1", "bcubed_recall")
            }
            for name, sub in scopes.items()
        }
    return out
