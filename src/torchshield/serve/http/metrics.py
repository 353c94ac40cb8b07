"""Prometheus metrics of one worker: counters kept here, text rendered by ``prometheus_client``
when it is installed (a collector over these counters) and by a small writer otherwise, so the
service does not need the extra. Per-worker numbers: with several workers, scrape each or sum."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

__all__ = ["Metrics"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter = Counter()  # (route, status) -> n
        self.predictions: Counter = Counter()  # model -> inputs answered
        self.denials: Counter = Counter()  # status -> n
        self.latency_buckets: Counter = Counter()
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, str(status))] += 1
            if status in (401, 403, 404, 413, 415, 422, 429):
                self.denials[str(status)] += 1
            self.latency_sum += seconds
            self.latency_count += 1
            for b in _BUCKETS:
                if seconds <= b:
                    self.latency_buckets[b] += 1

    def families(self, monitor: Any, audit_head: int | None) -> list[tuple[str, str, str, list]]:
        """(name, type, help, [(suffix, labels, value)]) for every metric."""
        with self._lock:
            fams = [
                ("torchshield_requests_total", "counter", "HTTP requests by route and status",
                 [("", {"route": r, "status": s}, n) for (r, s), n in sorted(self.requests.items())]),
                ("torchshield_denied_total", "counter", "Requests refused, by status",
                 [("", {"status": s}, n) for s, n in sorted(self.denials.items())]),
                ("torchshield_predictions_total", "counter", "Inputs answered, by model",
                 [("", {"model": m}, n) for m, n in sorted(self.predictions.items())]),
                ("torchshield_request_seconds", "histogram", "Request latency",
                 [("_bucket", {"le": str(b)}, self.latency_buckets[b]) for b in _BUCKETS]
                 + [("_bucket", {"le": "+Inf"}, self.latency_count), ("_sum", {}, self.latency_sum),
                    ("_count", {}, self.latency_count)]),
            ]
        snap = monitor.snapshot()
        fams += [
            ("torchshield_extraction_alerts_total", "counter", "Extraction-monitor alerts, by kind",
             [("", {"kind": k}, n) for k, n in sorted(monitor.alerts_total.items())]),
            ("torchshield_key_queries", "gauge", "Inputs seen per API key id (this worker)",
             [("", {"key_id": k}, s["queries"]) for k, s in sorted(snap.items())]),
            ("torchshield_key_label_entropy_bits", "gauge", "Entropy of a key's predicted labels",
             [("", {"key_id": k}, s["label_entropy_bits"]) for k, s in sorted(snap.items())]),
        ]
        if audit_head is not None:
            fams.append(("torchshield_audit_head_seq", "gauge", "Sequence number of the last audit record",
                         [("", {}, audit_head)]))
        return fams

    def render(self, monitor: Any, audit_head: int | None) -> tuple[bytes, str]:
        fams = self.families(monitor, audit_head)
        try:
            return _render_prometheus_client(fams)
        except ImportError:
            return _render_text(fams).encode(), "text/plain; version=0.0.4; charset=utf-8"


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _render_text(fams: list) -> str:
    """Prometheus text exposition 0.0.4, written by hand (used without prometheus_client)."""
    lines = []
    for name, kind, help_, samples in fams:
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        for suffix, labels, value in samples:
            lab = ",".join(f'{k}="{_esc(str(v))}"' for k, v in labels.items())
            lines.append(f"{name}{suffix}{{{lab}}} {float(value)!r}" if lab else f"{name}{suffix} {float(value)!r}")
    return "\n".join(lines) + "\n"


def _render_prometheus_client(fams: list) -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import Metric

    class _Snapshot:
        def collect(self) -> Any:
            for name, kind, help_, samples in fams:
                base = name[: -len("_total")] if kind == "counter" and name.endswith("_total") else name
                m = Metric(base, help_, kind)
                for suffix, labels, value in samples:
                    m.add_sample(name + suffix, labels, float(value))
                yield m

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Snapshot())
    return generate_latest(reg), CONTENT_TYPE_LATEST
