"""The sink's /healthz (liveness) stays 200 while the store is down, since the sink is then
paused and losing nothing, and its /readyz is 503 meanwhile; plus its write-duration histogram."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from kafka_io.connection import KafkaConnection
from sinks.cli import sink_liveness, sink_readiness
from tests.sinks import servers
from tests.sinks.helpers import FIRST_READ_S, create_topic, make_records, produce_records, unique, wait_for
from tests.sinks.test_store_limits import SinkProcess


def test_liveness_holds_while_the_store_is_down_and_fails_when_the_loop_is_stuck() -> None:
    assert sink_liveness(100.0, None, store_down=False) == (True, "starting")
    assert sink_liveness(100.0, 99.0, store_down=True) == (True, "ok: store unavailable, consumption paused")
    assert sink_liveness(100.0, 99.0, store_down=False) == (True, "ok")
    ok, text = sink_liveness(1000.0, 600.0, store_down=True, stall_after_s=300.0)
    assert not ok and "has not come round for 400 s" in text


def test_readiness_follows_the_store() -> None:
    assert sink_readiness(store_down=True, last_flush_age_s=5.0) == (False, "store unavailable: consumption paused")
    assert sink_readiness(store_down=False, last_flush_age_s=5.0) == (True, "ok: last flush 5 s ago")
    assert sink_readiness(store_down=False, last_flush_age_s=None) == (True, "ok")


def status(listen: str, path: str) -> int:
    try:
        return httpx.get(f"http://{listen}{path}", timeout=5).status_code
    except httpx.HTTPError:
        return -1


@pytest.mark.integration
def test_store_down_keeps_healthz_200_and_makes_readyz_503(kafka: KafkaConnection, topic_name: str,
                                                           tmp_path: Path) -> None:
    vm = servers.private_victoriametrics(tmp_path / "vm")
    vm.start()
    cluster = unique("health")
    records = make_records(cluster, n_nodes=5, n_windows=8, end0_ms=1_700_000_040_000)
    create_topic(kafka, topic_name)
    produce_records(kafka, topic_name, records[:20])
    sink = SinkProcess(kafka, vm.url, topic_name, tmp_path / "sink.log", "--max-backoff", "1")
    try:
        assert wait_for(lambda: (sink.metric("kpp_sink_points_written_total") or 0) > 0 if status(
            sink.listen, "/metrics") == 200 else False, FIRST_READ_S + 30), sink.log.read_text()[-3000:]
        assert status(sink.listen, "/healthz") == 200 and status(sink.listen, "/readyz") == 200
        assert sink.metric("kpp_sink_write_duration_seconds_count") >= 1
        assert sink.metric("kpp_sink_write_duration_seconds_bucket", le="+Inf") >= 1
        assert sink.metric("process_cpu_seconds_total") is not None

        vm.stop()
        produce_records(kafka, topic_name, records[20:])
        assert wait_for(lambda: status(sink.listen, "/readyz") == 503, 30), sink.log.read_text()[-3000:]
        assert sink.metric("kpp_sink_store_up") == 0
        # the store stays away for several retries: alive all along
        assert wait_for(lambda: status(sink.listen, "/healthz") == 200
                        and (sink.metric("kpp_sink_retries_total") or 0) >= 3, 30)
        assert status(sink.listen, "/healthz") == 200 and status(sink.listen, "/readyz") == 503
        assert "store unavailable" in httpx.get(f"http://{sink.listen}/healthz", timeout=5).text

        vm.start()
        assert wait_for(lambda: status(sink.listen, "/readyz") == 200, 60), sink.log.read_text()[-3000:]
        assert sink.proc.poll() is None
    finally:
        sink.stop()
        vm.stop()
