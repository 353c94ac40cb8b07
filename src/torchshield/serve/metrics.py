"""Prometheus metrics of the service, kept by ``prometheus_client``, correct across workers.

With ``--workers N`` every worker is its own process behind one port, so a scrape reaches one
of them at random: per-process counters would show a random worker's share. ``torchshield
serve`` therefore runs ``prometheus_client`` in its multiprocess mode whenever it starts several
workers: it points ``PROMETHEUS_MULTIPROC_DIR`` at a folder it empties at start (see
:func:`prepare_multiprocess_dir`), each worker's counters live in memory-mapped files there, and
a scrape, whichever worker answers it, sums the files of all of them
(``MultiProcessCollector``). With one process (one worker, tests, an embedding app) the metrics
live in a registry of their own.

Labels are bounded: routes are route templates, statuses the few HTTP codes, models the served
names and alert kinds the monitor's few. Nothing is labelled by API key (an unbounded set that
grows with every key ever made); what each key did is in the audit log.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["MULTIPROC_ENV", "ServeMetrics", "prepare_multiprocess_dir"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_DENIALS = frozenset({401, 403, 404, 413, 415, 422, 429})


def prepare_multiprocess_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (0700) and remove the metric files a previous run left there, so that the
    counters of a new service start at zero. Only ``*.db`` files (``prometheus_client``'s) go."""
    p = Path(path)
    p.mkdir(mode=0o700, parents=True, exist_ok=True)
    for f in p.glob("*.db"):
        f.unlink()
    return p


class ServeMetrics:
    """The service's counters and histogram; :meth:`render` is the Prometheus text of all workers."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        # In multiprocess mode the values live in files, and a scrape reads every worker's files:
        # the metrics are registered nowhere. Otherwise in this object's own registry.
        self._registry = None if self.multiprocess_dir else CollectorRegistry(auto_describe=True)
        reg = self._registry
        self.requests = Counter("torchshield_requests", "HTTP requests by route template and status",
                                ["route", "status"], registry=reg)
        self.denied = Counter("torchshield_denied", "Requests refused, by status", ["status"], registry=reg)
        self.predictions = Counter("torchshield_predictions", "Inputs answered, by model", ["model"], registry=reg)
        self.alerts = Counter("torchshield_extraction_alerts", "Extraction-monitor alerts, by kind", ["kind"],
                              registry=reg)
        # The privacy gateway's counters (--privacy-policy): labelled by entity type and action only
        # (both from fixed sets: the recognisers' types, the policy's operators), never by value.
        self.gateway_counters = {
            name: Counter(f"torchshield_gateway_{name}", help_, ["type", "action"], registry=reg)
            for name, help_ in (("entities", "PII found in requests, by type and operator"),
                                ("leaks", "PII in answers the caller did not send, by type and action"),
                                ("reidentified", "Placeholders mapped back for callers allowed to see PII"),
                                ("lookalikes", "Placeholder lookalikes typed by callers"),
                                ("refusals", "Requests the gateway refused, by reason"))}
        self.latency = Histogram("torchshield_request_seconds", "Request latency", buckets=_BUCKETS, registry=reg)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        if status in _DENIALS:
            self.denied.labels(str(status)).inc()
        self.latency.observe(seconds)

    def predicted(self, model: str, n: int) -> None:
        self.predictions.labels(model).inc(n)

    def gateway(self, name: str, labels: Any, amount: int = 1) -> None:
        """The gateway's counter hook (``torchshield_gateway_<name>_total`` -> our counter)."""
        short = name.removeprefix("torchshield_gateway_").removesuffix("_total")
        counter = self.gateway_counters.get(short)
        if counter is not None:
            counter.labels(str(labels.get("type", "-"))[:40],
                           str(labels.get("action") or labels.get("reason") or "-")[:40]).inc(amount)

    def alert(self, kind: str) -> None:
        self.alerts.labels(kind).inc()

    def render(self, audit_head: int | None) -> tuple[bytes, str]:
        """Prometheus text exposition of every worker's metrics, plus the audit head (read
        from the database, the same for all workers)."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.multiprocess_dir:
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
            text = generate_latest(registry)
        elif self._registry is not None:  # set in __init__ whenever there is no multiprocess_dir
            text = generate_latest(self._registry)
        else:
            raise RuntimeError("ServeMetrics has neither a registry nor a multiprocess directory")
        if audit_head is not None:
            text += _gauge("torchshield_audit_head_seq", "Sequence number of the last audit record", audit_head)
        return text, CONTENT_TYPE_LATEST


def _gauge(name: str, help_: str, value: float) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    class _One:
        def collect(self) -> Any:
            yield GaugeMetricFamily(name, help_, value=value)

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_One())
    return generate_latest(reg)
