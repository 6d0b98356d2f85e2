"""Dagster definition of the daily job: the same `cdp` commands cron runs (see docs/SCHEDULE.md).

Not imported by the cdp-ml package; Dagster is installed only where the orchestrator runs.
"""

import os
import subprocess

from dagster import Definitions, In, Nothing, OpExecutionContext, ScheduleDefinition, job, op

CDP = os.environ.get("CDP_BIN", "cdp")


def _run(context: OpExecutionContext, *args: str) -> None:
    # The cdp command's own exit code decides: non-zero fails the op and stops the downstream ones.
    result = subprocess.run([CDP, *args], capture_output=True, text=True, env=os.environ.copy())
    context.log.info(result.stdout[-4000:])
    if result.returncode != 0:
        raise RuntimeError(f"cdp {' '.join(args)} exited {result.returncode}: {result.stderr[-4000:]}")


@op
def refresh(context: OpExecutionContext) -> None:
    # new raw files -> incremental resolve -> features -> score -> push; then a challenger for any
    # model whose latest monitoring run decayed, promoted only if the gate says so
    _run(context, "refresh", "--retrain-if-decayed")


@op(ins={"after": In(Nothing)})
def monitor(context: OpExecutionContext) -> None:
    # exit 1 past a threshold: the failed op is the alert
    _run(context, "monitor")


@job
def cdp_daily() -> None:
    monitor(after=refresh())


defs = Definitions(
    jobs=[cdp_daily],
    schedules=[ScheduleDefinition(job=cdp_daily, cron_schedule="30 2 * * *", execution_timezone="UTC")],
)
