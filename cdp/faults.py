"""Fault injection for the crash-safety tests (tests/integration/test_faults.py), not a setting.

`CDPTEST_KILL_AT=<phase>:<n>` makes the process kill itself with SIGKILL, as `kill -9` would, at the
n-th write of the run: phase `before` with the n-th temporary file complete but not yet published,
`after` right after the n-th publish. Every atomic write (cdp.atomic) passes through `checkpoint`,
so each writing stage offers one kill point per file it writes. Phase `step` marks points between
writes that are not ours (after Feast apply, before materialize). Unset (always, in normal use): a
dictionary lookup per write.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "CDPTEST_KILL_AT"
_writes = {"before": 0, "after": 0, "step": 0}


def checkpoint(phase: str) -> None:
    planned = os.environ.get(VARIABLE)
    if not planned:
        return
    _writes[phase] += 1
    at_phase, _, count = planned.partition(":")
    if at_phase == phase and count.isdigit() and _writes[phase] == int(count):
        os.kill(os.getpid(), signal.SIGKILL)
