"""`kpp stream --listen`: a real worker process against the real broker serves /metrics,
/healthz and /readyz; its counters follow the input it processed and the group's lag drains;
it stays live while the broker is down."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kafka_io.connection import KafkaConnection
from tests.conftest import free_port, wait_until
from tests.streams.harness import Worker, create_topics, produce, unique_prefix
from tests.streams.simdata import scrape_records

pytestmark = pytest.mark.integration


def scrape(listen: str) -> dict[tuple[str, tuple], float]:
    """Every sample of the worker's /metrics by (name, labels); empty while it does not answer."""
    try:
        text = httpx.get(f"http://{listen}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def status(listen: str, path: str) -> int:
    try:
        return httpx.get(f"http://{listen}{path}", timeout=5).status_code
    except httpx.HTTPError:
        return -1


def test_worker_metrics_follow_the_input_and_lag_drains(kafka, tmp_path) -> None:
    prefix = unique_prefix()
    create_topics(kafka, prefix, 1)
    records = scrape_records(nodes=3, minutes=6, start_s=1_700_000_100)
    messages = [(r.key, r.encode(), r.scrape_ts_ms) for r in records] + [(b"node-000", b"{not json", None)]
    # produced before the worker starts: its group has committed nothing, the lag is all of it
    produce(kafka, f"{prefix}.samples", messages)
    listen = f"127.0.0.1:{free_port()}"
    lag_key = ("kpp_stream_consumer_lag", (("partition", "0"), ("topic", f"{prefix}.samples")))
    first_lag: list[float] = []

    def lag_seen() -> bool:
        got = scrape(listen)
        if lag_key in got and not first_lag:
            first_lag.append(got[lag_key])
        return bool(first_lag)

    worker = Worker(kafka, prefix, 1, tmp_path, "--idle-timeout", "6", "--listen", listen)
    try:
        assert wait_until(lambda: lag_seen() or worker.proc.poll() is not None, 90), worker.output()[-3000:]
        assert worker.proc.poll() is None, worker.output()[-3000:]
        assert first_lag == [len(messages)]
        assert status(listen, "/healthz") == 200

        def processed() -> bool:
            got = scrape(listen)
            return (got.get(("kpp_stream_scrapes_total", ())) == len(messages)
                    and got.get(("kpp_stream_windows_closed_total", (("scope", "cluster"), ("window", "300s"))), 0) > 0
                    and got.get(lag_key) == 0)

        assert wait_until(processed, 120), f"{scrape(listen)}\n{worker.output()[-3000:]}"
        got = scrape(listen)
        # 6 minutes of scrapes, closed by watermark and then by the idle timeout
        assert got[("kpp_stream_windows_closed_total", (("scope", "node"), ("window", "60s")))] >= 6
        assert got[("kpp_stream_windows_closed_total", (("scope", "cluster"), ("window", "60s")))] >= 6
        assert got[("kpp_stream_dlq_total", (("reason", "malformed"),))] == 1
        assert got[("kpp_stream_batch_duration_seconds_count", (("stage", "node"),))] >= 1
        assert got[("kpp_stream_newest_closed_window_age_seconds", ())] > 0
        assert got[("kpp_stream_up", ())] == 1 and ("process_cpu_seconds_total", ()) in got
        assert wait_until(lambda: scrape(listen).get(("kpp_stream_node_states", ())) == 3, 30)
        assert status(listen, "/healthz") == 200 and status(listen, "/readyz") == 200
    finally:
        worker.stop()


def test_a_second_worker_on_a_taken_address_says_so_and_keeps_working(kafka, tmp_path) -> None:
    prefix = unique_prefix()
    create_topics(kafka, prefix, 2)
    listen = f"127.0.0.1:{free_port()}"
    first = Worker(kafka, prefix, 2, tmp_path, "--listen", listen, name="a")
    second = None
    try:
        assert wait_until(lambda: status(listen, "/readyz") == 200 or first.proc.poll() is not None, 90)
        second = Worker(kafka, prefix, 2, tmp_path, "--listen", listen, name="b")
        assert wait_until(lambda: "running without /metrics" in second.output() or second.proc.poll() is not None, 90)
        assert f"cannot listen on {listen}" in second.output()
        assert second.proc.poll() is None and "Traceback" not in second.output(), second.output()[-3000:]
    finally:
        if second is not None:
            second.stop()
        first.stop()


def heartbeat_age(listen: str) -> float | None:
    """Seconds since the worker's last heartbeat, from its /healthz text (None: no answer)."""
    try:
        answer = httpx.get(f"http://{listen}/healthz", timeout=5)
    except httpx.HTTPError:
        return None
    match = re.search(r"last heartbeat ([0-9.]+) s ago", answer.text)
    return float(match.group(1)) if answer.status_code == 200 and match else None


def test_healthz_stays_200_while_the_broker_is_down(private_kafka, tmp_path) -> None:
    kafka = KafkaConnection(bootstrap=private_kafka.address)
    prefix = unique_prefix()
    create_topics(kafka, prefix, 1)
    listen = f"127.0.0.1:{free_port()}"
    worker = Worker(kafka, prefix, 1, tmp_path, "--listen", listen)
    try:
        lag_key = ("kpp_stream_consumer_lag", (("partition", "0"), ("topic", f"{prefix}.samples")))
        assert wait_until(lambda: lag_key in scrape(listen) and heartbeat_age(listen) is not None, 90), \
            worker.output()[-3000:]
        failed = "cannot read the stream group's consumer lag"
        before = worker.output().count(failed)
        private_kafka.down()
        # the lag reader finds Kafka gone (two reads, 15 s apart) and drops the series ...
        assert wait_until(lambda: worker.output().count(failed) > before, 60), worker.output()[-3000:]
        seen_down = time.monotonic()
        assert lag_key not in scrape(listen)
        # ... while the event loop keeps its heartbeat: one comes after the outage was seen
        assert wait_until(lambda: (age := heartbeat_age(listen)) is not None and age < time.monotonic() - seen_down,
                          30), worker.output()[-3000:]
        assert worker.proc.poll() is None and status(listen, "/healthz") == 200
    finally:
        worker.stop()
