"""One typed settings object: every `CDP_*` variable, read by pydantic-settings from the environment
and the chosen profile file (`CDP_PROFILE=embedded` (default) or `scale`, config/<profile>.env,
package data). Profiles switch engines (Redis online store, MLflow on PostgreSQL, Spark for
identity scoring, feature building and training-set joins, several serving workers), never code.
Explicit environment variables always win over the profile; the profile wins over the defaults.
`cdp config` prints the effective values and where each came from."""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cdp import config as _config_package

CONFIG_DIR = Path(_config_package.__file__).parent  # package data: the profiles travel with the wheel
ENV_PREFIX = "CDP_"


class ProfileError(ValueError):
    """An unknown profile or a malformed profile file; the message names it."""


class SettingsError(ValueError):
    """A `CDP_*` value that cannot be used; the message names the variable, the value and what is expected."""


Engine = Literal["duckdb", "spark"]


class Settings(BaseSettings):
    """Effective configuration. Field `x` is the variable `CDP_X`; descriptions are shown by `cdp config`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="ignore", frozen=True)

    profile: str = Field("embedded", description="Configuration profile: embedded (nothing to start) or scale")
    home: Path | None = Field(None, description="Workspace folder (default ./data); also --home")
    debug: bool = Field(False, description="Show the full traceback of an error (also `cdp --debug`)")
    # stores and engines
    online_store: Literal["sqlite", "redis"] = Field("sqlite", description="Feast online store")
    redis: str = Field("localhost:6379", description="Redis host:port when the online store is redis")
    offline_store: Engine = Field("duckdb", description="Feast offline store for point-in-time training sets")
    feature_store_yaml: Path | None = Field(None, description="Use this feature_store.yaml instead of the built-in")
    materialize_engine: Literal["bulk", "feast"] = Field(
        "bulk", description="Online-store load: bulk writer (fast) or Feast's materialize"
    )
    feature_engine: Engine = Field("duckdb", description="Engine that builds the feature views")
    identity_engine: Engine = Field("duckdb", description="Engine that scores identity pairs (Splink backend)")
    mlflow_uri: str | None = Field(None, description="MLflow tracking + registry URI (default: SQLite in workspace)")
    # Spark (scale profile)
    spark_master: str = Field("local[2]", description="Spark master: local[N], spark://host:7077, yarn")
    spark_driver_memory: str = Field("4g", description="Spark driver memory")
    spark_shuffle_partitions: int = Field(4, ge=1, description="Spark SQL shuffle partitions")
    spark_driver_host: str = Field("127.0.0.1", description="Address the Spark driver binds and advertises")
    spark_local_dir: Path | None = Field(None, description="Spark scratch folder")
    spark_jars: str | None = Field(None, description="Extra jars on the Spark classpath")
    spark_break_lineage: Literal["persist", "parquet", "checkpoint"] | None = Field(
        None, description="How Splink on Spark breaks lineage (default persist on local, parquet on a cluster)"
    )
    spark_staging: Path | None = Field(None, description="Folder for training-set staging files on Spark")
    # ingest, features, privacy
    default_region: str | None = Field(
        None, description="Phone region(s) for national-form numbers, e.g. GB or GB,IE (default: detected by ingest)"
    )
    date_order: Literal["ymd", "dmy", "mdy"] | None = Field(
        None, description="Order of non-ISO dates such as 02/03/2024 (default: detected per column by ingest)"
    )
    csv_encoding: str = Field(
        "auto",
        description="Text encoding of raw CSV files, e.g. utf-8, cp1252, latin-1 (default auto: UTF-8, with or "
        "without a byte-order mark, else Windows-1252, the usual Excel export, named in the ingest report)",
    )
    enrichment_max_age_days: int = Field(730, ge=1, description="Vendor facts older than this many days age out")
    privacy_key: SecretStr | None = Field(None, description="Key of suppression tokens (default: privacy/token.key)")
    privacy_old_key: SecretStr | None = Field(
        None,
        description="Only for `cdp privacy rekey`: the key the tokens were made with, when CDP_PRIVACY_KEY is "
        "already the new one (default: privacy/token.key)",
    )
    # serving
    serve_host: str = Field("127.0.0.1", description="Address `cdp serve` binds (non-loopback needs CDP_API_KEY)")
    serve_workers: int = Field(1, ge=1, description="BentoML worker processes")
    serve_models: str = Field(
        "churn,next_best_product,campaign_response", description="Models the service loads (comma-separated)"
    )
    serve_metrics: bool = Field(True, description="Prometheus /metrics (behind the key)")
    access_log: bool = Field(True, description="BentoML access log")
    model_reload_seconds: float = Field(30.0, ge=0, description="How often the service checks for new champions")
    api_key: SecretStr | None = Field(None, description="Bearer key required by the service")
    insecure: bool = Field(False, description="Allow a non-loopback bind without a key")
    max_body_bytes: int = Field(1_048_576, ge=1, description="Largest request body the service reads (413 above)")
    # request-time events (POST /events, `cdp events consume`; docs/EVENTS.md)
    events_write: Literal["inline", "stream"] = Field(
        "inline",
        description="POST /events writes the session rows in the request (inline), or appends the checked events "
        "to CDP_EVENTS_STREAM at CDP_REDIS and answers at once (stream: `cdp serve` starts `cdp events consume` "
        "beside the server to write them; keeps reads fast under a write load)",
    )
    events_stream: str = Field("cdp:events", description="Redis stream `cdp events consume` reads (at CDP_REDIS)")
    events_group: str = Field("cdp-events", description="Redis consumer group of `cdp events consume`")
    events_max_age_hours: float = Field(
        24.0, gt=0, description="Events older than this many hours are refused (the daily batch covers them)"
    )
    session_boost_slots: int = Field(
        3, ge=0, description="First slots of /next_best_product given to the category viewed in the last hour"
    )
    # campaign response
    data_end: datetime | None = Field(
        None,
        description="When the data was extracted (ISO-8601): campaign response windows ending by then count as "
        "observed (default: the latest event in any table)",
    )
    campaign_outcome: str = Field(
        "order",
        description="What campaign response models: any order (default), any web/app event (web_visit) or a web/app "
        "event of one type (web:<event type>, e.g. web:add_to_cart) in the response window",
    )
    campaign_contact_cost: float = Field(
        0.0,
        ge=0,
        description="Cost of one contact as a share of one conversion's value: sets the recommended campaign depth",
    )
    # monitoring (`cdp monitor` exits 1 past these)
    monitor_psi_max: float = Field(
        0.2, gt=0, description="Largest PSI of a feature or of the score distribution before `cdp monitor` alerts"
    )
    monitor_null_jump: float = Field(
        0.1, gt=0, le=1, description="Largest rise of a feature's null share over training before it alerts"
    )
    monitor_ignore_features: str = Field(
        "days_since_first_order,tenure_days,days_since_last_complaint",
        description="Features whose drift never alerts (comma-separated): tenure grows with the calendar by "
        "definition, and so does the time since a rare event while the history is short",
    )
    monitor_metric_drop: float = Field(
        0.05, gt=0, description="Largest drop of the realized metric below the validation metric before it alerts"
    )

    @field_validator("csv_encoding", mode="before")
    @classmethod
    def _csv_encoding(cls, value: Any) -> Any:
        import codecs

        text = value.strip().lower() if isinstance(value, str) else value
        if isinstance(text, str) and text != "auto":
            try:
                codecs.lookup(text)
            except LookupError:
                raise ValueError(f"'{value}' is not a text encoding (e.g. utf-8, cp1252, latin-1, or auto)") from None
        return text

    @field_validator("campaign_outcome", mode="before")
    @classmethod
    def _campaign_outcome(cls, value: Any) -> Any:
        """order | web_visit | web:<event type>; the event type is checked against the data when training."""
        text = value.strip() if isinstance(value, str) else value
        if not isinstance(text, str):
            return value
        if text.lower() in ("order", "web_visit"):
            return text.lower()
        kind, sep, event_type = text.partition(":")
        if kind.strip().lower() == "web" and sep and event_type.strip() and event_type.strip().isprintable():
            return f"web:{event_type.strip()}"
        raise ValueError("choose order, web_visit or web:<event type> (e.g. web:add_to_cart)")

    @field_validator(
        "online_store",
        "offline_store",
        "feature_engine",
        "identity_engine",
        "materialize_engine",
        "date_order",
        mode="before",
    )
    @classmethod
    def _case_insensitive(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def profile_name(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get("CDP_PROFILE", "embedded").strip() or "embedded"


def profile_path(name: str, config_dir: Path = CONFIG_DIR) -> Path:
    path = config_dir / f"{name}.env"
    if not path.exists():
        known = sorted(p.stem for p in config_dir.glob("*.env"))
        raise ProfileError(f"CDP_PROFILE={name!r}: no {path.name} in {config_dir} (known: {', '.join(known)})")
    return path


def profile_values(name: str, config_dir: Path = CONFIG_DIR) -> dict[str, str]:
    """NAME=value lines of a profile file, checked line by line (pydantic-settings' dotenv reader
    skips malformed lines silently; a typo in a profile must not)."""
    path = profile_path(name, config_dir)
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


def _explain(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        expected = item["msg"]
        if item["type"] == "literal_error":
            expected = "choose one of " + ", ".join(item["ctx"]["expected"].replace("'", "").split(" or "))
        elif item["type"] == "value_error":  # a validator's own message, without pydantic's "Value error, "
            expected = str(item["ctx"]["error"])
        problems.append(f"{env_name(field)}={item.get('input')!r}: {expected}")
    return "; ".join(problems)


def load_settings() -> Settings:
    """The effective settings now: environment > profile file > defaults. Raises SettingsError
    (naming each bad variable and value) or ProfileError."""
    path = profile_path(profile_name())
    profile_values(profile_name())  # strict syntax check first
    try:
        return Settings(_env_file=path)  # type: ignore[call-arg]
    except ValidationError as error:
        raise SettingsError(_explain(error)) from None


def setting(field: str, error: type[Exception] = SettingsError) -> Any:
    """One effective value; a bad configuration is raised as `error` (the caller's own kind)."""
    try:
        return getattr(load_settings(), field)
    except SettingsError as problem:
        raise error(str(problem)) from None


def sources(environ: Mapping[str, str] = os.environ, applied: Mapping[str, str] | None = None) -> dict[str, str]:
    """Where each effective value came from: environment, profile <name>.env, or default. Values the
    CLI copied from the profile into the environment (`applied`) count as the profile's."""
    name = profile_name(environ)
    from_profile = profile_values(name)
    applied = applied or {}
    origin = {}
    for field in Settings.model_fields:
        key = env_name(field)
        if environ.get(key, "").strip() and key not in applied:
            origin[field] = "environment"
        elif key in from_profile:
            origin[field] = f"profile {name}.env"
        else:
            origin[field] = "default"
    return origin


_APPLIED: dict[str, str] = {}


def apply_profile(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Fill unset variables from the chosen profile; returns what was applied. The environment keeps
    them because Feast's yaml (`${CDP_REDIS}`) and the `bentoml serve` child read the environment."""
    applied = {k: v for k, v in profile_values(profile_name(environ)).items() if k not in environ}
    environ.update(applied)
    if environ is os.environ:
        _APPLIED.update(applied)
    return applied


def applied_profile() -> dict[str, str]:
    return dict(_APPLIED)
