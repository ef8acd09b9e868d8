"""Configuration errors name the environment variable, never echo its value."""

from __future__ import annotations

import pytest
from pydantic import Field
from trailerlink_common.config import ConfigError, ServiceSettings, env_name, load_settings


class ExampleSettings(ServiceSettings):
    dicom_port: int = Field(11112, ge=1, le=65535)
    spool_key_file: str = Field(..., description="required")


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAILERLINK_SPOOL_KEY_FILE", "/secrets/spool.key")
    monkeypatch.setenv("TRAILERLINK_DICOM_PORT", "104")
    settings = load_settings(ExampleSettings)
    assert settings.dicom_port == 104
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"


def test_bad_value_names_the_variable_without_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAILERLINK_SPOOL_KEY_FILE", "/secrets/spool.key")
    monkeypatch.setenv("TRAILERLINK_DICOM_PORT", "secret-looking-value")
    with pytest.raises(ConfigError) as caught:
        load_settings(ExampleSettings)
    assert "TRAILERLINK_DICOM_PORT" in str(caught.value)
    assert "secret-looking-value" not in str(caught.value)


def test_missing_required_and_out_of_range_are_both_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAILERLINK_SPOOL_KEY_FILE", raising=False)
    monkeypatch.setenv("TRAILERLINK_HTTP_PORT", "70000")
    with pytest.raises(ConfigError) as caught:
        load_settings(ExampleSettings)
    message = str(caught.value)
    assert "TRAILERLINK_SPOOL_KEY_FILE" in message
    assert "TRAILERLINK_HTTP_PORT" in message


def test_env_name() -> None:
    assert env_name(ExampleSettings, "dicom_port") == "TRAILERLINK_DICOM_PORT"
