"""What the scoring service needs before it may start, and what to run when something is missing.

`cdp serve` checks this before launching BentoML (a red line instead of a stack trace), and the
service checks it again in its constructor (so `bentoml serve` alone refuses to start too).
"""

from __future__ import annotations

from cdp.settings import setting
from cdp.training.capability import CapabilityOff
from cdp.training.registry import SERVED, family
from cdp.workspace import Workspace

SERVED_MODELS = SERVED  # the registered families the service loads (cdp.training.registry)


class ServiceNotReady(RuntimeError):
    """The service cannot start; the message names what is missing and the command that fixes it."""


def served_models() -> tuple[str, ...]:
    """Models the service loads: CDP_SERVE_MODELS (comma-separated), default every served family."""
    raw = setting("serve_models")
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    unknown = [n for n in names if n not in SERVED_MODELS]
    if unknown or "churn" not in names:
        raise ServiceNotReady(f"CDP_SERVE_MODELS={raw!r}: choose from {', '.join(SERVED_MODELS)} (churn is required)")
    return names


def check_ready(ws: Workspace, store=None) -> None:
    """Raise ServiceNotReady unless features, the online store and every served champion exist."""
    from cdp.featurestore.store import StoreConfigError, open_store

    if not (ws.features / "snapshots.json").exists():
        raise ServiceNotReady(f"no features in {ws.features}: run `cdp features` (after ingest and resolve)")
    try:
        store = store or open_store(ws)
    except StoreConfigError as error:
        raise ServiceNotReady(str(error)) from None
    _check_online_store(ws, store)
    _check_champion(ws, "churn")  # the others may honestly have no champion: their routes say why


NO_CHAMPION_ADVICE = {
    "campaign_response": "no model better than random for this campaign: contact everyone eligible or no one",
    "next_best_product": "no model better than the popularity baseline: recommend the top sellers",
}


def no_champion_reason(ws: Workspace, name: str) -> str:
    """Why `name` has no champion (the gate's words from its latest run), for routes and `cdp score`."""
    from cdp.training.tracking import registry_client

    client = registry_client(ws)
    versions = client.search_model_versions(f"name='{name}'") if _registered(client, name) else []
    if not versions:
        try:
            family(name).check_inputs(ws)
        except CapabilityOff as off:  # the tables it needs were not provided: not a step to run
            return str(off)
        return f"no model trained yet: run `cdp train {name.replace('_', '-')}`"
    latest = max(versions, key=lambda v: int(v.version))
    run = client.get_run(latest.run_id) if latest.run_id else None
    reason = run.data.tags.get("no_champion_reason") if run else None
    advice = NO_CHAMPION_ADVICE.get(name, "no champion")
    return f"{advice} ({reason})" if reason else advice


def _registered(client, name: str) -> bool:
    return any(m.name == name for m in client.search_registered_models(f"name='{name}'"))


def _check_online_store(ws: Workspace, store) -> None:
    import pandas as pd

    from cdp.features.build import load_snapshots
    from cdp.featurestore.store import latest_snapshot

    snapshots, _ = load_snapshots(ws)
    sample = latest_snapshot(ws, "customer_profile", snapshots[-1])["customer_id"].head(5).tolist()
    kind = store.config.online_store.type
    try:
        online = store.get_online_features(
            features=["customer_profile:tenure_days"], entity_rows=[{"customer_id": c} for c in sample]
        ).to_dict()
    except Exception as error:
        raise ServiceNotReady(
            f"online store ({kind}) cannot be read: {type(error).__name__}: {error}. "
            "Start it (Redis: `redis-server`, CDP_REDIS=host:port) and run `cdp features`"
        ) from None
    if not sample or all(pd.isna(v) for v in online["tenure_days"]):
        raise ServiceNotReady(
            f"online store ({kind}) holds no customer features: run `cdp features` "
            "(it materializes the latest snapshot)"
        )


def _check_champion(ws: Workspace, name: str) -> None:
    from cdp.training.tracking import CHAMPION, has_champion

    if not has_champion(ws, name):
        raise ServiceNotReady(
            f"no '{CHAMPION}' model '{name}' in MLflow ({ws.mlflow_uri}): run "
            f"`cdp train {name.replace('_', '-')}` (or leave it out with CDP_SERVE_MODELS)"
        )
