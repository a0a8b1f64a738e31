"""Metrics and the optional `/healthz` + `/metrics` HTTP listener."""

from bot.observability.health import (
    CheckResult,
    DatabaseCheck,
    HealthCheck,
    HealthServer,
    SyncFreshnessCheck,
    sqlalchemy_ping,
)
from bot.observability.metrics import KNOWN_NOTIFICATION_TYPES, RELAY_LATENCY_BUCKETS, Metrics

__all__ = [
    "KNOWN_NOTIFICATION_TYPES",
    "RELAY_LATENCY_BUCKETS",
    "CheckResult",
    "DatabaseCheck",
    "HealthCheck",
    "HealthServer",
    "Metrics",
    "SyncFreshnessCheck",
    "sqlalchemy_ping",
]
