"""The typed settings object: environment > profile file > default, each value's source, clear errors."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from cdp.cli.app import app
from cdp.settings import Settings, SettingsError, load_settings, sources


@pytest.fixture
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("CDP_"):
            monkeypatch.delenv(key)
    return monkeypatch


def test_environment_wins_over_profile_which_wins_over_default(clean_env):
    clean_env.setenv("CDP_PROFILE", "scale")
    clean_env.setenv("CDP_SERVE_WORKERS", "3")
    settings = load_settings()
    assert settings.serve_workers == 3  # environment (the profile says 2)
    assert settings.online_store == "redis"  # profile
    assert settings.max_body_bytes == Settings.model_fields["max_body_bytes"].default  # default
    origin = sources()
    assert origin["serve_workers"] == "environment"
    assert origin["online_store"] == "profile scale.env"
    assert origin["max_body_bytes"] == "default"


def test_bad_values_name_the_variable_and_the_value(clean_env):
    clean_env.setenv("CDP_FEATURE_ENGINE", "flink")
    clean_env.setenv("CDP_MAX_BODY_BYTES", "-5")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert "CDP_FEATURE_ENGINE='flink': choose one of duckdb, spark" in str(error.value)
    assert "CDP_MAX_BODY_BYTES='-5'" in str(error.value)


def test_engine_names_are_case_and_space_insensitive(clean_env):
    clean_env.setenv("CDP_IDENTITY_ENGINE", " Spark ")
    assert load_settings().identity_engine == "spark"


def test_cdp_config_shows_sources_and_masks_secrets(clean_env):
    clean_env.setenv("CDP_API_KEY", "very-secret-key")
    clean_env.setenv("CDP_MLFLOW_URI", "postgresql+psycopg2://cdp:hunter2@db:5432/mlflow")
    result = CliRunner().invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["variable"]: row for row in json.loads(result.output)}
    assert rows["CDP_API_KEY"]["value"] == "***" and rows["CDP_API_KEY"]["source"] == "environment"
    assert rows["CDP_MLFLOW_URI"]["value"] == "postgresql+psycopg2://***@db:5432/mlflow"
    assert "very-secret-key" not in result.output and "hunter2" not in result.output
    assert rows["CDP_ONLINE_STORE"]["source"] == "profile embedded.env"
    assert set(rows) == {f"CDP_{name.upper()}" for name in Settings.model_fields}


def test_the_configuration_reference_in_docs_is_the_generated_one():
    from pathlib import Path

    from cdp.cli.config import reference_markdown

    committed = (Path(__file__).parents[2] / "docs" / "CONFIGURATION.md").read_text()
    assert committed == reference_markdown(), "regenerate: cdp config --markdown > docs/CONFIGURATION.md"
