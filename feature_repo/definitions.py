"""The Feast repo users open: `CDP_HOME=/abs/workspace feast -c feature_repo apply` (or `plan`, `ui`).

Every object is defined once in the package (`cdp.features.definitions`, what `cdp features`
applies) and bound here to the workspace's feature tables, so the plain `feast` CLI sees the
same entity, views, push sources and feature services.
"""

from __future__ import annotations

import os
from pathlib import Path

from cdp.features.definitions import definitions

for _obj in definitions(Path(os.environ.get("CDP_HOME", "data")).resolve() / "features"):
    globals()[_obj.name] = _obj
