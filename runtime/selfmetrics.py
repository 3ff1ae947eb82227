"""Self-observability shared by the long-running stages (producer, sink, stream worker):
their metrics on a prometheus_client registry of their own (tests run several stages in one
process, so never the global one) with the process collector, served with /healthz
(liveness) and /readyz (readiness) by `serve`.

`Counters` is the thin facade the producer and the sink use: each metric is declared once
(`describe`: kind, help, label names), then updated by name. It keeps the call sites short and
the exposition what it was (label names in alphabetical order, no `_created` series)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence

import prometheus_client
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client import generate_latest
from prometheus_client.registry import Collector

from contracts.errors import ConfigError

# `<name>_created` would double every counter and histogram series; nothing here reads it.
prometheus_client.disable_created_metrics()

#: Buckets for durations of network round trips and writes (seconds): 1 ms to 2 min.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    120.0)

Health = Callable[[], tuple[bool, str]]

_KINDS = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}


def new_registry() -> CollectorRegistry:
    """A stage's own registry, with the process metrics (process_cpu_seconds_total, ...)."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    return registry


class Counters:
    """A stage's metrics by name on its own registry: counters, gauges and histograms."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else new_registry()
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}
        self._children: dict[tuple, Any] = {}

    def describe(self, name: str, kind: str, help_text: str, labels: Sequence[str] = (),
                 buckets: Sequence[float] = DURATION_BUCKETS) -> None:
        """Declare a metric (again: no-op). A counter's name ends in _total."""
        if name in self._metrics:
            return
        if kind not in _KINDS:
            raise ValueError(f"metric {name}: kind {kind!r} is not one of {sorted(_KINDS)}")
        extra = {"buckets": tuple(buckets)} if kind == "histogram" else {}
        self._metrics[name] = _KINDS[kind](name, help_text, sorted(labels), registry=self.registry, **extra)

    def _child(self, name: str, labels: dict[str, str]):
        # prometheus_client's labels() validates and locks on every call (~2 µs): its result is
        # kept per label set (they are few: targets, reasons, topics)
        key = (name, *labels.items())
        try:
            return self._children[key]
        except KeyError:
            pass
        try:
            metric = self._metrics[name]
        except KeyError:
            raise KeyError(f"metric {name} was not declared with describe()") from None
        child = self._children[key] = metric.labels(**labels) if labels else metric
        return child

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self._child(name, labels).inc(amount)

    def set(self, name: str, value: float, **labels: str) -> None:
        self._child(name, labels).set(value)

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._child(name, labels).observe(value)

    def get(self, name: str, **labels: str) -> float:
        """The current value of a counter or gauge sample (0 when never set)."""
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def register(self, collector: Collector) -> None:
        """Add a collector of values read from elsewhere at scrape time (publisher stats)."""
        self.registry.register(collector)

    def render(self) -> str:
        return generate_latest(self.registry).decode()


def serve(listen: str, registry: CollectorRegistry | Counters, healthy: Health,
          ready: Health | None = None) -> ThreadingHTTPServer:
    """Serve /metrics, /healthz and /readyz on `listen` (HOST:PORT) from a daemon thread.
    /readyz answers like /healthz unless `ready` is given."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"listen address {listen!r} is not HOST:PORT")
    if isinstance(registry, Counters):
        registry = registry.registry
    checks = {"/healthz": healthy, "/readyz": ready or healthy}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?")[0]
            if path == "/metrics":
                self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in checks:
                ok, text = checks[path]()
                self._answer(200 if ok else 503, (text + "\n").encode(), "text/plain; charset=utf-8")
            else:
                self._answer(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # no access log on stderr
            pass

    try:
        server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {listen}: {exc.strerror}") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="selfmetrics", daemon=True).start()
    return server

