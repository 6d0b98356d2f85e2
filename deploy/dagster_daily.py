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
def ingest(context: OpExecutionContext) -> None:
    _run(context, "ingest")


@op(ins={"after": In(Nothing)})
def resolve(context: OpExecutionContext) -> None:
    _run(context, "resolve", "--incremental")


@op(ins={"after": In(Nothing)})
def features(context: OpExecutionContext) -> None:
    _run(context, "features")


@op(ins={"after": In(Nothing)})
def score(context: OpExecutionContext) -> None:
    _run(context, "score")


@job
def cdp_daily() -> None:
    score(after=features(after=resolve(after=ingest())))


defs = Definitions(
    jobs=[cdp_daily],
    schedules=[ScheduleDefinition(job=cdp_daily, cron_schedule="30 2 * * *", execution_timezone="UTC")],
)
