"""Configuration profiles: `CDP_PROFILE=embedded` (default) or `scale` switch engines (Redis online
store, MLflow on PostgreSQL, Spark for identity scoring, feature building and training-set joins,
several serving workers) through environment defaults read from
config/<profile>.env, never through code changes. Explicit environment variables always win."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from cdp import config as _config_package

CONFIG_DIR = Path(_config_package.__file__).parent  # package data: the profiles travel with the wheel


class ProfileError(ValueError):
    """An unknown profile or a malformed profile file; the message names it."""


def profile_values(name: str, config_dir: Path = CONFIG_DIR) -> dict[str, str]:
    path = config_dir / f"{name}.env"
    if not path.exists():
        known = sorted(p.stem for p in config_dir.glob("*.env"))
        raise ProfileError(f"CDP_PROFILE={name!r}: no {path.name} in {config_dir} (known: {', '.join(known)})")
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ProfileError(f"{path.name} line {number}: expected NAME=value, got {line!r}")
        values[key.strip()] = value.strip()
    return values


def apply_profile(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Fill unset variables from the chosen profile; returns what was applied."""
    name = environ.get("CDP_PROFILE", "embedded").strip() or "embedded"
    applied = {k: v for k, v in profile_values(name).items() if k not in environ}
    environ.update(applied)
    return applied
