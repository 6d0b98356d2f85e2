"""What `cdp monitor` reads and decides: the monitoring runs over time (MLflow experiment
`monitoring`, written by every scoring run: cdp.training.drift), the alerts of each family's
latest run against the thresholds, and plots over time (reports/ and the latest run's artifacts).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cdp.training.drift import EXPERIMENT
from cdp.workspace import Workspace

COLUMNS = {
    "tags.model": "model",
    "tags.model_version": "version",
    "tags.scored_at": "scored_at",
    "metrics.rows_scored": "rows_scored",
    "metrics.max_psi": "max_psi",
    "tags.max_psi_feature": "max_psi_feature",
    "tags.top_psi": "top_psi",
    "metrics.max_null_jump": "max_null_jump",
    "tags.max_null_jump_feature": "max_null_jump_feature",
    "metrics.score_psi": "score_psi",
    "tags.realized_metric": "realized_metric",
    "tags.realized_snapshot": "realized_snapshot",
    "tags.realized_model_version": "realized_model_version",
    "metrics.realized_value": "realized_value",
    "metrics.promised_value": "promised_value",
    "run_id": "run_id",
    "start_time": "start_time",
}


@dataclass(frozen=True)
class Thresholds:
    psi_max: float  # CDP_MONITOR_PSI_MAX
    null_jump: float  # CDP_MONITOR_NULL_JUMP
    metric_drop: float  # CDP_MONITOR_METRIC_DROP

    @classmethod
    def from_settings(cls) -> Thresholds:
        from cdp.settings import setting

        return cls(setting("monitor_psi_max"), setting("monitor_null_jump"), setting("monitor_metric_drop"))


def history(ws: Workspace) -> pd.DataFrame:
    """One row per monitoring run (oldest first); empty when no scoring run has been monitored."""
    import mlflow

    from cdp.workspace import use_workspace

    empty = pd.DataFrame(columns=list(COLUMNS.values()))
    if ws.mlflow_uri.startswith("sqlite:///") and not Path(ws.mlflow_uri.removeprefix("sqlite:///")).exists():
        return empty  # nothing trained or scored here: do not create an MLflow database just to look
    use_workspace(ws)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        return empty
    runs = mlflow.search_runs(experiment_names=[EXPERIMENT], order_by=["attributes.start_time ASC"])
    frame = runs.reindex(columns=list(COLUMNS)).rename(columns=COLUMNS)
    frame["scored_at"] = pd.to_datetime(frame["scored_at"], utc=True)
    return frame.sort_values(["start_time"], kind="stable", ignore_index=True)


def latest(frame: pd.DataFrame) -> pd.DataFrame:
    """Each family's latest monitoring run."""
    return frame.groupby("model", sort=True).tail(1).reset_index(drop=True)


def _ranked(top: object, feature: object, value: float) -> list[tuple[str, float]]:
    """(feature, PSI) pairs of the run's top_psi tag ("a=0.31, b=0.22"), else its single largest."""
    if isinstance(top, str) and top:
        pairs = [item.rsplit("=", 1) for item in top.split(", ")]
        return [(name, float(psi)) for name, psi in pairs]
    return [(str(feature), float(value))] if pd.notna(value) else []


def alerts(latest_runs: pd.DataFrame, limits: Thresholds) -> list[str]:
    """One sentence per threshold crossed in each family's latest run, naming feature and value."""
    return [sentence for sentences in alerts_by_family(latest_runs, limits).values() for sentence in sentences]


def alerts_by_family(latest_runs: pd.DataFrame, limits: Thresholds) -> dict[str, list[str]]:
    """Family -> the sentences of its latest run's crossed thresholds (families without any left out)."""
    out: dict[str, list[str]] = {}
    for row in latest_runs.itertuples(index=False):
        crossed = _crossed(row, limits)
        if crossed:
            out.setdefault(str(row.model), []).extend(crossed)
    return out


def _crossed(row, limits: Thresholds) -> list[str]:
    out = []
    who = f"{row.model} v{row.version} (scored {row.scored_at:%Y-%m-%d})"
    for feature, value in _ranked(row.top_psi, row.max_psi_feature, row.max_psi):
        if value > limits.psi_max:
            out.append(f"{who}: feature {feature} drifted, PSI {value:.3f} > CDP_MONITOR_PSI_MAX={limits.psi_max}")
    if pd.notna(row.max_null_jump) and row.max_null_jump > limits.null_jump:
        out.append(
            f"{who}: feature {row.max_null_jump_feature} null share up {row.max_null_jump:.3f} over "
            f"training > CDP_MONITOR_NULL_JUMP={limits.null_jump}"
        )
    if pd.notna(row.score_psi) and row.score_psi > limits.psi_max:
        out.append(
            f"{who}: score distribution shifted from validation, PSI {row.score_psi:.3f} > "
            f"CDP_MONITOR_PSI_MAX={limits.psi_max}"
        )
    if pd.notna(row.realized_value) and pd.notna(row.promised_value):
        drop = row.promised_value - row.realized_value
        if drop > limits.metric_drop:
            out.append(
                f"{who}: realized {row.realized_metric} {row.realized_value:.3f} of the scores served at "
                f"{row.realized_snapshot} (v{row.realized_model_version}) is {drop:.3f} below the "
                f"{row.promised_value:.3f} validation promised > CDP_MONITOR_METRIC_DROP={limits.metric_drop}"
            )
    return out


def plot_history(ws: Workspace, frame: pd.DataFrame, limits: Thresholds) -> list[Path]:
    """Per family reports/monitoring_<model>.png (max feature PSI, score PSI, realized vs promised
    metric over the scoring runs), also logged to that family's latest monitoring run (plots/)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow import MlflowClient

    from cdp.training.evaluate import save_figure

    ws.reports.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=ws.mlflow_uri)
    written = []
    for model, runs in frame.groupby("model", sort=True):
        x = range(len(runs))
        labels = [f"{t:%Y-%m-%d}\nv{v}" for t, v in zip(runs["scored_at"], runs["version"], strict=True)]
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for ax, column, title in ((axes[0], "max_psi", "largest feature PSI"), (axes[1], "score_psi", "score PSI")):
            ax.plot(x, runs[column].astype(float), marker="o")
            ax.axhline(limits.psi_max, color="red", linestyle="--", label=f"alert > {limits.psi_max}")
            ax.set_title(title)
            ax.legend(loc="upper left", fontsize=8)
        axes[2].plot(x, runs["realized_value"].astype(float), marker="o", label="realized")
        promised = runs["promised_value"].astype(float)
        axes[2].plot(x, promised, marker="s", linestyle=":", label="validation")
        axes[2].plot(x, promised - limits.metric_drop, color="red", linestyle="--", label="alert below")
        axes[2].set_title(f"realized vs validation {' '.join(runs['realized_metric'].dropna().iloc[-1:])}")
        axes[2].legend(loc="lower left", fontsize=8)
        every = max(1, len(runs) // 10)  # a year of daily runs: about ten labelled ticks
        for ax in axes:
            ax.set_xticks(list(x)[::every], labels[::every], fontsize=7)
            ax.set_xlabel("scoring run (scored at, champion)")
        fig.suptitle(f"{model}: monitoring over {len(runs)} scoring runs")
        path = save_figure(fig, ws.reports / f"monitoring_{model}.png")
        client.log_artifact(runs["run_id"].iloc[-1], str(path), artifact_path="plots")
        written.append(path)
    return written
