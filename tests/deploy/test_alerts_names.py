"""The pipeline's own metrics the alert rules read are the ones the stages declare: every
`kpp_*` name in deploy/alerts is in the exposition of `kpp produce`, `kpp stream` or `kpp sink`
(their registries, rendered as /metrics renders them), so a renamed metric cannot leave an
alert silently reading nothing."""

from __future__ import annotations

import re
from types import SimpleNamespace

from prometheus_client import generate_latest

from runtime.selfmetrics import Counters
from producers.cli_produce import PublisherCollector
from producers.node import NodeProducer, NodeSettings
from producers.select import Selector
from sinks.loop import describe_metrics
from streams.selfmetrics import StreamMetrics
from tests.deploy.promql import rules


def exposed_names(text: str) -> set[str]:
    """Series names of an exposition: every # TYPE line's name (a counter's with `_total`,
    whichever way the library writes it) and every sample's."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names |= {name, f"{name.removesuffix('_total')}_total"} if kind == "counter" else {name}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def stage_expositions() -> dict[str, str]:
    producer = Counters()
    NodeProducer(NodeSettings(node="n", cluster="c"), [], Selector(), sink=None, topic="t", counters=producer)
    stats = SimpleNamespace(sent=0, send_errors=0, spool_depth=0, dropped=0, connected=True)
    producer.register(PublisherCollector(SimpleNamespace(stats=stats)))
    sink = Counters()
    describe_metrics(sink)
    return {"produce": producer.render(), "sink": sink.render(),
            "stream": generate_latest(StreamMetrics().registry).decode()}


def rule_metric_names() -> set[str]:
    return {name for rule in rules() for name in re.findall(r"\bkpp_[a-z_]+\b", rule["expr"])}


def test_every_self_metric_an_alert_reads_is_exposed_by_a_stage() -> None:
    read = rule_metric_names()
    assert {"kpp_producer_up", "kpp_sink_store_up", "kpp_stream_consumer_lag"} <= read  # the parse works
    exposed = {stage: exposed_names(text) for stage, text in stage_expositions().items()}
    for name in sorted(read):
        stage = {"producer": "produce", "sink": "sink", "stream": "stream"}[name.split("_")[1]]
        assert name in exposed[stage], f"{name}: not in kpp {stage}'s /metrics ({sorted(exposed[stage])})"
