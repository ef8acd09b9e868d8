"""Service configuration from environment variables.

Every service has one settings class (a subclass of :class:`ServiceSettings`), built
once at start-up by :func:`load_settings` and passed down. Variables are prefixed
``TRAILERLINK_``; a field ``kafka_bootstrap_servers`` is read from
``TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "TRAILERLINK_"


class ConfigError(Exception):
    """A setting is missing or invalid. The message names every bad variable."""


class ServiceSettings(BaseSettings):
    """Settings every service has. Subclasses add their own and override defaults."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", case_sensitive=False, frozen=True
    )

    service_name: str = Field("trailerlink", description="Name in logs, metrics and traces")
    trailer_id: str = Field(
        "trailer-dev", description="This trailer's id (its certificate name); '' centrally"
    )
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated host:port of this site's Kafka"
    )
    kafka_client_id: str = Field("", description="Kafka client id; defaults to the service name")
    http_host: str = Field("0.0.0.0", description="Address of the HTTP port (health, metrics)")  # noqa: S104
    http_port: int = Field(9100, ge=1, le=65535, description="HTTP port: /healthz /readyz /metrics")
    data_dir: Path = Field(Path("/var/lib/trailerlink"), description="Writable state directory")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO")
    otel_exporter: Literal["none", "otlp", "console"] = Field(
        "none", description="Where traces go: none, otlp (OTEL_EXPORTER_OTLP_* vars) or console"
    )
    shutdown_grace_seconds: float = Field(
        20.0, gt=0, description="How long SIGTERM waits for in-flight work"
    )


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def env_name(settings_cls: type[BaseSettings], field: str) -> str:
    """The environment variable that sets ``field`` of ``settings_cls``."""
    prefix = settings_cls.model_config.get("env_prefix", "") or ""
    return f"{prefix}{field}".upper()


def load_settings(settings_cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build ``settings_cls`` from the environment (plus explicit ``overrides``).

    Raises :class:`ConfigError` naming each offending environment variable and why,
    without echoing the value (a value may be a secret).
    """
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "?"
            problems.append(f"{env_name(settings_cls, field)}: {error['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
