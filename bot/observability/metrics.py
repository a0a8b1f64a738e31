"""Prometheus metrics for gts-bot.

`Metrics` owns its own `CollectorRegistry` (never the process-wide default one), so two bots, or two tests,
in one process never share counters. Callers use the small typed methods below and never touch
prometheus_client objects.

Label cardinality is bounded: notification types outside `KNOWN_NOTIFICATION_TYPES` are labelled
"other", and instance labels are normalised hosts, at most `max_instance_labels` of them: when a new host
would exceed that, the series of the host not heard from for longest are dropped (probing many hosts
cannot grow the registry; a busy, connected instance stays).

In a split deployment (`run --role relay|matrix`) every series carries a `worker` label naming the process
(the relay worker's id, or "matrix"), so the processes' series never collide when scraped together.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from bot.fediverse.notification_types import TYPE_NAMES

__all__ = ["KNOWN_NOTIFICATION_TYPES", "RELAY_LATENCY_BUCKETS", "Metrics"]

KNOWN_NOTIFICATION_TYPES: Final = frozenset(TYPE_NAMES)
_OTHER: Final = "other"

# Notification created on the instance → Matrix event sent; from near-instant streaming to slow polling.
RELAY_LATENCY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)


def _type_label(type_: str) -> str:
    return type_ if type_ in KNOWN_NOTIFICATION_TYPES else _OTHER


def _instance_label(instance: str) -> str:
    # Callers pass the normalised host already; this only guards against case/trailing-dot duplicates.
    return instance.strip().lower().rstrip(".")


class Metrics:
    """All gts-bot instruments, registered in a registry of their own."""

    def __init__(self, version: str, *, max_instance_labels: int = 256, worker: str | None = None) -> None:
        self._worker = worker
        self._instance_labels: OrderedDict[str, None] = OrderedDict()
        self._max_instance_labels = max(1, max_instance_labels)
        self.registry: Final = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._build = Info("gtsbot_build", "gts-bot build information.", registry=r)
        self._build.info({"version": version})
        self._connected_accounts = Gauge(
            "gtsbot_connected_accounts", "Fediverse accounts connected (all states).", registry=r
        )
        self._live_streams = Gauge(
            "gtsbot_live_streams", "Open streaming connections to fediverse instances.", registry=r
        )
        self._relayed = Counter(
            "gtsbot_notifications_relayed",
            "Notifications relayed into Matrix, by notification type.",
            ["type"],
            registry=r,
        )
        self._failed = Counter(
            "gtsbot_notifications_failed",
            "Notifications that could not be relayed, by notification type.",
            ["type"],
            registry=r,
        )
        self._latency = Histogram(
            "gtsbot_relay_latency_seconds",
            "Time from the notification's creation on the instance to the Matrix event being sent.",
            buckets=RELAY_LATENCY_BUCKETS,
            registry=r,
        )
        self._instance_requests = Counter(
            "gtsbot_instance_requests", "HTTP requests made to fediverse instances.", ["instance"], registry=r
        )
        self._instance_429 = Counter(
            "gtsbot_instance_rate_limited",
            "HTTP 429 answers from fediverse instances.",
            ["instance"],
            registry=r,
        )
        self._matrix_sends = Counter("gtsbot_matrix_sends", "Events sent to the homeserver.", registry=r)
        self._matrix_429 = Counter(
            "gtsbot_matrix_rate_limited", "M_LIMIT_EXCEEDED / 429 answers from the homeserver.", registry=r
        )
        self._pending_flows = Gauge(
            "gtsbot_pending_connect_flows", "Connect flows waiting for the user's code.", registry=r
        )
        self._breakers_open = Gauge(
            "gtsbot_circuit_breakers_open", "Per-instance circuit breakers currently open.", registry=r
        )
        # Create the bounded label sets up front so rate() over them starts from 0, not from absence.
        for label in (*sorted(KNOWN_NOTIFICATION_TYPES), _OTHER):
            self._relayed.labels(type=label)
            self._failed.labels(type=label)

    # Gauges -------------------------------------------------------------------------------------------

    def set_connected_accounts(self, count: int) -> None:
        self._connected_accounts.set(count)

    def set_live_streams(self, count: int) -> None:
        self._live_streams.set(count)

    def set_pending_flows(self, count: int) -> None:
        self._pending_flows.set(count)

    def set_open_circuit_breakers(self, count: int) -> None:
        self._breakers_open.set(count)

    # Relay --------------------------------------------------------------------------------------------

    def notification_relayed(self, type_: str, latency_seconds: float | None = None) -> None:
        """Count one relayed notification; `latency_seconds` is created_at → Matrix event sent.

        Pass None when the latency means nothing (e.g. a backlog fetched after downtime). A negative
        value (instance clock ahead of ours) is recorded as 0.
        """
        self._relayed.labels(type=_type_label(type_)).inc()
        if latency_seconds is not None:
            self._latency.observe(max(0.0, latency_seconds))

    def notification_failed(self, type_: str) -> None:
        self._failed.labels(type=_type_label(type_)).inc()

    # HTTP ---------------------------------------------------------------------------------------------

    def instance_request(self, instance: str, status: int) -> None:
        """Count one answered request to `instance` (a normalised host); a 429 is also counted as such."""
        label = self._bounded_instance_label(instance)
        self._instance_requests.labels(instance=label).inc()
        if status == 429:
            self._instance_429.labels(instance=label).inc()

    def _bounded_instance_label(self, instance: str) -> str:
        label = _instance_label(instance)
        if label in self._instance_labels:
            self._instance_labels.move_to_end(label)
            return label
        self._instance_labels[label] = None
        while len(self._instance_labels) > self._max_instance_labels:
            stale, _ = self._instance_labels.popitem(last=False)
            for counter in (self._instance_requests, self._instance_429):
                with contextlib.suppress(KeyError):
                    counter.remove(stale)
        return label

    def matrix_send(self, *, rate_limited: bool = False) -> None:
        """Count one send attempt to the homeserver; `rate_limited` when it answered 429."""
        self._matrix_sends.inc()
        if rate_limited:
            self._matrix_429.inc()

    # Exposition ---------------------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The registry in Prometheus text format: (body, content type)."""
        source = self.registry if self._worker is None else _Labelled(self.registry, "worker", self._worker)
        return generate_latest(source), CONTENT_TYPE_LATEST


class _Labelled:
    """A registry's metrics with one more label on every sample."""

    def __init__(self, registry: CollectorRegistry, name: str, value: str) -> None:
        self._registry, self._name, self._value = registry, name, value

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            labelled = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            labelled.samples = [
                Sample(s.name, {**s.labels, self._name: self._value}, s.value, s.timestamp, s.exemplar)
                for s in metric.samples
            ]
            yield labelled
