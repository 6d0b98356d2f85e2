"""Explicit promotion (`cdp promote`): a registered version becomes `champion` only through the
out-of-time gate.

In:  a model name, a registered version (default: the latest), the workspace (Feast + staged data).
Gate: both the challenger and the current champion are scored on the *challenger's* out-of-time
     rows, rebuilt from the workspace with the challenger run's own split (its validation
     snapshot / campaigns / cutoff), with the same metric code training used. The challenger
     wins when its primary metric is strictly higher. The gate also refuses when the champion
     may have trained on those rows (it was validated later than the challenger), because the
     comparison would then favour the champion unfairly.
`force=True` moves the alias anyway and records it: model-version tags `promotion_forced=true`
     and `promotion_forced_reason`, plus the full gate outcome in the `promotion` tag.
Out: the gate outcome dict; reports/promotion_<model>_v<version>.{json,md} in the workspace.
"""

from __future__ import annotations

import json
from typing import Any

from cdp.models.campaign_response import CAMPAIGN_RESPONSE
from cdp.models.spec import ModelSpec
from cdp.training.gate import Reference, better_direction, decide
from cdp.training.registry import Evaluator, UnknownModel, family, snapshot_day, training_context
from cdp.workspace import Workspace


class PromotionError(ValueError):
    """A request the gate cannot answer (unknown model or version); message is for the user."""


def spec_for(model: str) -> ModelSpec:
    try:
        return family(model).spec
    except UnknownModel as error:
        raise PromotionError(str(error)) from None


def out_of_time_evaluator(ws: Workspace, spec: ModelSpec, params: dict[str, str]) -> tuple[Evaluator, str]:
    """Rebuild a run's out-of-time rows from the workspace; returns (model -> metrics, description)."""
    return family(spec.name).evaluator(training_context(ws), params)


def run_baseline(client, run_id: str, spec: ModelSpec) -> Reference | None:
    """The simple baseline a run measured on its own out-of-time rows (logged by register_run_model)."""
    run = client.get_run(run_id)
    value = run.data.metrics.get(f"baseline_{spec.primary_metric}")
    return None if value is None else Reference(run.data.tags.get("baseline", "baseline"), float(value))


def champion_saw_rows(spec: ModelSpec, champion: dict[str, str], challenger: dict[str, str]) -> bool:
    """Could the champion have trained on the challenger's out-of-time rows?"""
    if spec.name == CAMPAIGN_RESPONSE.name:
        return bool(set(champion.get("train_campaigns", "").split(",")) & set(challenger["valid_campaigns"].split(",")))
    return snapshot_day(champion["valid_snapshot"]) > snapshot_day(challenger["valid_snapshot"])


def promote(
    ws: Workspace, model: str, version: str | None = None, force: bool = False, reason: str | None = None
) -> dict:
    """`cdp promote`: the one gate (same-run baseline, then the champion re-scored on the
    challenger's out-of-time rows) decides; `force` overrides it, tagged and reported."""
    from mlflow import MlflowClient

    from cdp.training.tracking import current_champion
    from cdp.workspace import use_workspace

    spec = spec_for(model)
    use_workspace(ws)
    client = MlflowClient()
    version = _chosen_version(client, spec, version)
    challenger = client.get_model_version(spec.name, version)
    current = current_champion(client, spec.name)
    outcome: dict[str, Any] = {
        "model": spec.name,
        "challenger_version": version,
        "metric": spec.primary_metric,
        "champion_version": None if current is None else str(current.version),
        "forced": False,
    }
    if current is not None and str(current.version) == version:
        return {
            **outcome,
            "promoted": False,
            "decision": "already champion",
            "reason": f"v{version} is already the champion",
        }
    if current is None:  # no champion to beat; the challenger's own baseline still has to be beaten
        comparison = _comparison(spec, None, "no champion yet", {}, {})
        logged = client.get_run(str(challenger.run_id)).data.metrics.get(spec.primary_metric, float("nan"))
        decision = decide(spec.primary_metric, logged, run_baseline(client, str(challenger.run_id), spec), None)
        passed, why = decision.promoted, decision.reason
    else:
        passed, why, comparison = _against_champion(ws, client, spec, challenger, current, outcome)
    outcome.update(
        promoted=passed or force,
        passed_gate=passed,
        reason=why,
        forced=bool(force and not passed),
        decision="promoted" if passed else ("forced" if force else "refused"),
    )
    _record(ws, client, spec, version, outcome, comparison, reason)
    return outcome


def _chosen_version(client, spec: ModelSpec, version: str | None) -> str:
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{spec.name}'"))
    if not versions:
        raise PromotionError(
            f"{spec.name}: no registered versions (run `cdp train {spec.name.replace('_', '-')}` first)"
        )
    chosen = str(version or versions[-1])
    if int(chosen) not in versions:
        raise PromotionError(f"{spec.name}: no version {chosen} (registered: {', '.join(map(str, versions))})")
    return chosen


def _comparison(spec: ModelSpec, champion: str | None, compared_on: str, mine: dict, theirs: dict) -> dict[str, Any]:
    rows = [
        {
            "metric": k,
            "challenger": v,
            "champion": theirs.get(k),
            "delta": None if theirs.get(k) is None else v - theirs[k],
            "better": better_direction(k),
        }
        for k, v in mine.items()
    ]
    return {
        "model": spec.name,
        "champion_version": champion,
        "rows": rows,
        "compared_on": compared_on,
        "champion_metrics": theirs,
    }


def _against_champion(
    ws: Workspace, client, spec: ModelSpec, challenger, current, outcome: dict
) -> tuple[bool, str, dict]:
    """Both versions re-scored on the challenger's out-of-time rows, then the gate."""
    from cdp.training.tracking import load_version

    params = client.get_run(str(challenger.run_id)).data.params
    champion_params = client.get_run(str(current.run_id)).data.params
    evaluate, rows = out_of_time_evaluator(ws, spec, params)
    mine = evaluate(load_version(spec.name, challenger.version, client))
    theirs = evaluate(load_version(spec.name, current.version, client))
    comparison = _comparison(spec, str(current.version), f"challenger's out-of-time rows: {rows}", mine, theirs)
    a, b = mine[spec.primary_metric], theirs[spec.primary_metric]
    outcome.update(challenger_value=a, champion_value=b, compared_on=rows)
    if champion_saw_rows(spec, champion_params, params):
        why = (
            f"champion v{current.version} was validated after the challenger "
            f"({champion_params.get('valid_snapshot')} > {params.get('valid_snapshot')}) and may "
            "have trained on the challenger's out-of-time rows: retrain the challenger on current data"
        )
        return False, why, comparison
    # the one gate: the challenger's same-run baseline, then the champion on the same rows
    champion = Reference(f"champion v{current.version}", b)
    decision = decide(spec.primary_metric, a, run_baseline(client, str(challenger.run_id), spec), champion)
    return decision.promoted, f"{decision.reason} on {rows}", comparison


VERDICTS = {
    "promoted": "passed: promoted to champion",
    "refused": "refused: champion kept",
    "forced": "refused, but promoted with --force (tagged promotion_forced=true)",
}


def _record(
    ws: Workspace, client, spec: ModelSpec, version: str, outcome: dict, comparison: dict, reason: str | None
) -> None:
    """Move the alias when promoted; tag the version; reports/promotion_<model>_v<n>.{json,md}."""
    from cdp.training.tracking import CHAMPION, comparison_markdown

    if outcome["promoted"]:
        client.set_registered_model_alias(spec.name, CHAMPION, version)
    tags = {"promotion": json.dumps(outcome, default=str)[:5000]}
    if outcome["forced"]:
        tags.update(promotion_forced="true", promotion_forced_reason=(reason or "no reason given")[:500])
    for key, value in tags.items():
        client.set_model_version_tag(spec.name, version, key, value)
    ws.reports.mkdir(parents=True, exist_ok=True)
    stem = ws.reports / f"promotion_{spec.name}_v{version}"
    stem.with_suffix(".json").write_text(json.dumps({**outcome, "comparison": comparison}, indent=1, default=str))
    gate = {
        "promoted": outcome["promoted"],
        "metric": spec.primary_metric,
        "compared_on": comparison["compared_on"],
        "verdict": VERDICTS[outcome["decision"]],
    }
    stem.with_suffix(".md").write_text(
        comparison_markdown(comparison, version, gate) + f"\nDecision: {outcome['decision']} ({outcome['reason']}).\n"
    )
