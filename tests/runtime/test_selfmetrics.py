"""The stages' metrics facade on prometheus_client and the /metrics, /healthz, /readyz server."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts.errors import ConfigError
from runtime.selfmetrics import Counters, serve
from tests.conftest import free_port


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_counters_gauges_histograms_render_with_sorted_labels_and_no_created_series() -> None:
    c = Counters()
    c.describe("kpp_t_scrapes_total", "counter", "Scrapes.", ("target", "outcome"))
    c.describe("kpp_t_up", "gauge", "Up.", ("target",))
    c.describe("kpp_t_duration_seconds", "histogram", "Durations.", ("target",), buckets=(0.1, 1.0))
    c.inc("kpp_t_scrapes_total", target="a", outcome="ok")
    c.inc("kpp_t_scrapes_total", 2, target="a", outcome="ok")
    c.set("kpp_t_up", 1, target="a")
    for value in (0.05, 0.5, 5.0):
        c.observe("kpp_t_duration_seconds", value, target="a")
    text = c.render()
    # label names in alphabetical order, as the hand-written exposition had them (tests grep it)
    assert 'kpp_t_scrapes_total{outcome="ok",target="a"} 3.0' in text
    assert "_created" not in text
    fam = families(text)
    buckets = {s.labels["le"]: s.value for s in fam["kpp_t_duration_seconds"].samples if s.name.endswith("_bucket")}
    assert buckets == {"0.1": 1.0, "1.0": 2.0, "+Inf": 3.0}
    assert fam["kpp_t_duration_seconds"].type == "histogram"
    assert c.get("kpp_t_scrapes_total", target="a", outcome="ok") == 3
    assert c.get("kpp_t_scrapes_total", target="b", outcome="ok") == 0  # never counted
    assert c.get("kpp_t_up", target="a") == 1
    # process metrics on the stage's own registry
    assert "process_cpu_seconds" in fam and "process_resident_memory_bytes" in fam


def test_each_stage_has_its_own_registry() -> None:
    one, two = Counters(), Counters()
    for c in (one, two):  # the same name twice in one process: no clash
        c.describe("kpp_t_total", "counter", "x")
    one.inc("kpp_t_total", 5)
    assert one.get("kpp_t_total") == 5 and two.get("kpp_t_total") == 0


def test_undeclared_metric_and_unknown_kind_are_clear_errors() -> None:
    c = Counters()
    with pytest.raises(KeyError, match="kpp_nope_total was not declared"):
        c.inc("kpp_nope_total")
    with pytest.raises(ValueError, match="kind 'summary'"):
        c.describe("kpp_x", "summary", "x")


def test_serve_metrics_healthz_and_a_separate_readyz() -> None:
    c = Counters()
    c.describe("kpp_t_total", "counter", "x")
    c.inc("kpp_t_total")
    state = {"ready": False}
    listen = f"127.0.0.1:{free_port()}"
    server = serve(listen, c, lambda: (True, "alive"), lambda: (state["ready"], "store down"))
    try:
        metrics = httpx.get(f"http://{listen}/metrics", timeout=5)
        assert metrics.status_code == 200 and "text/plain" in metrics.headers["content-type"]
        assert families(metrics.text)["kpp_t"].samples[0].value == 1.0
        health = httpx.get(f"http://{listen}/healthz", timeout=5)
        assert (health.status_code, health.text) == (200, "alive\n")
        ready = httpx.get(f"http://{listen}/readyz", timeout=5)
        assert (ready.status_code, ready.text) == (503, "store down\n")
        state["ready"] = True
        assert httpx.get(f"http://{listen}/readyz", timeout=5).status_code == 200
        assert httpx.get(f"http://{listen}/nope", timeout=5).status_code == 404
    finally:
        server.shutdown()


def test_readyz_answers_like_healthz_when_no_readiness_is_given() -> None:
    listen = f"127.0.0.1:{free_port()}"
    server = serve(listen, Counters(), lambda: (False, "stuck"))
    try:
        assert httpx.get(f"http://{listen}/readyz", timeout=5).status_code == 503
    finally:
        server.shutdown()


def test_bad_or_busy_listen_address_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not HOST:PORT"):
        serve("nope", Counters(), lambda: (True, ""))
    listen = f"127.0.0.1:{free_port()}"
    server = serve(listen, Counters(), lambda: (True, ""))
    try:
        with pytest.raises(ConfigError, match=f"cannot listen on {listen}"):
            serve(listen, Counters(), lambda: (True, ""))
    finally:
        server.shutdown()
