"""Over real HTTP (loopback, free port): URL scheme, content type, and every fault mode."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from simhelpers import START, Served, parsed_samples, sample_map
from simulator.promtext import CONTENT_TYPE

LAST = "kubeproxy_sync_proxy_rules_last_timestamp_seconds"
QUEUED = "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds"


def metrics(served: Served, node: str, **kw: float) -> httpx.Response:
    return httpx.get(f"{served.base}/nodes/{node}/metrics", timeout=kw.get("timeout", 10.0))


def set_fault(served: Served, node: str, mode: str) -> httpx.Response:
    return httpx.post(f"{served.base}/nodes/{node}/fault", json={"mode": mode}, timeout=10.0)


def test_healthz_and_node_list(served: Served) -> None:
    health = httpx.get(f"{served.base}/healthz")
    assert health.status_code == 200 and health.text.strip() == "ok"
    nodes = httpx.get(f"{served.base}/nodes")
    assert nodes.json() == ["node-000", "node-001", "node-002", "node-003"]


def test_metrics_body_is_exactly_the_model_and_parses(served: Served) -> None:
    served.clock.t = START + 321.0
    response = metrics(served, "node-002")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    assert response.text == served.cluster.render("node-002", START + 321.0)
    names = {n for n, _, _ in parsed_samples(response.text)}
    assert "kubeproxy_sync_proxy_rules_duration_seconds_bucket" in names


def test_unknown_paths_and_nodes_are_404(served: Served) -> None:
    assert httpx.get(f"{served.base}/nodes/node-999/metrics").status_code == 404
    assert httpx.get(f"{served.base}/metrics").status_code == 404
    assert set_fault(served, "node-999", "slow").status_code == 404


def test_bad_fault_body_is_400_and_changes_nothing(served: Served) -> None:
    assert set_fault(served, "node-000", "explode").status_code == 400
    bad_json = httpx.post(f"{served.base}/nodes/node-000/fault", content=b"{nope")
    assert bad_json.status_code == 400
    assert httpx.get(f"{served.base}/nodes/node-000/fault").json()["mode"] == "none"


def test_fault_can_be_read_back_and_cleared(served: Served) -> None:
    assert set_fault(served, "node-001", "http500").json()["mode"] == "http500"
    assert httpx.get(f"{served.base}/nodes/node-001/fault").json() == {
        "node": "node-001", "mode": "http500", "restarts": []}
    assert metrics(served, "node-001").status_code == 500
    assert metrics(served, "node-000").status_code == 200  # other nodes unaffected
    set_fault(served, "node-001", "none")
    assert metrics(served, "node-001").status_code == 200


def test_slow_delays_the_response(served: Served) -> None:
    set_fault(served, "node-003", "slow")
    began = time.monotonic()
    response = metrics(served, "node-003")
    assert response.status_code == 200
    assert time.monotonic() - began >= served.server.slow_seconds
    began = time.monotonic()
    metrics(served, "node-000")
    assert time.monotonic() - began < served.server.slow_seconds


def test_malformed_is_rejected_by_prometheus_client(served: Served) -> None:
    set_fault(served, "node-002", "malformed")
    response = metrics(served, "node-002")
    assert response.status_code == 200
    with pytest.raises(Exception):
        list(text_string_to_metric_families(response.text))
    list(text_string_to_metric_families(metrics(served, "node-001").text))


def test_gone_closes_without_a_response(served: Served) -> None:
    set_fault(served, "node-000", "gone")
    with pytest.raises(httpx.TransportError):
        metrics(served, "node-000", timeout=5.0)
    assert metrics(served, "node-001").status_code == 200  # the server itself is fine
    set_fault(served, "node-000", "none")
    assert metrics(served, "node-000").status_code == 200


def test_missing_families_serves_no_kubeproxy_families(served: Served) -> None:
    set_fault(served, "node-001", "missing-families")
    names = {n for n, _, _ in parsed_samples(metrics(served, "node-001").text)}
    assert "process_cpu_seconds_total" in names
    assert not [n for n in names if n.startswith("kubeproxy_")]


def test_stalled_freezes_last_timestamp_while_queued_advances(served: Served) -> None:
    served.clock.t = START + 100
    set_fault(served, "node-002", "stalled")
    samples = []
    for step in range(4):
        served.clock.t = START + 100 + 60 * (step + 1)
        samples.append(sample_map(metrics(served, "node-002").text))
    lasts = [s[(LAST, ())] for s in samples]
    queued = [s[(QUEUED, ())] for s in samples]
    assert len(set(lasts)) == 1 and lasts[0] <= START + 100
    assert queued == sorted(queued) and len(set(queued)) == 4
    healthy = sample_map(metrics(served, "node-001").text)
    assert healthy[(LAST, ())] > START + 300


def test_restart_over_http_resets_counters_and_start_time(served: Served) -> None:
    served.clock.t = START + 500
    before = sample_map(metrics(served, "node-003").text)
    reply = set_fault(served, "node-003", "restart").json()
    assert reply["mode"] == "none" and reply["restarts"] == [START + 500]
    after = sample_map(metrics(served, "node-003").text)
    key = ("kubeproxy_sync_proxy_rules_endpoint_changes_total", ())
    assert before[key] > 0 and after[key] == 0
    assert after[("process_start_time_seconds", ())] > before[("process_start_time_seconds", ())]
    served.clock.t = START + 800
    assert sample_map(metrics(served, "node-003").text)[key] > 0
