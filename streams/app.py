"""The Faust application of `kpp stream`: configuration only (the agents are in
streams/agents.py, the logic in the pure modules)."""

from __future__ import annotations

import os
from typing import Mapping

import faust

from kafka_io.connection import KafkaConnection
from kafka_io.admin import TopicSpec
from kafka_io.admin import ensure_topics as ensure_pipeline_topics
from streams.config import StreamSettings
from kafka_io.partitioner import KeyPartitioner


TABLES = ("node-state", "cluster-state")  # the changelog-backed tables agents.py declares


def app_id(settings: StreamSettings) -> str:
    """Consumer group and changelog topic names: one pipeline per topic prefix."""
    return f"kpp-streams.{settings.topic_prefix}"


def owned_topics(settings: StreamSettings) -> list[str]:
    topics = settings.topics
    return [topics.samples, settings.cluster_partials_topic, settings.ticks_topic, topics.late, topics.dlq,
            *topics.derived()]


def topic_specs(settings: StreamSettings, config: Mapping[str, str] | None = None) -> list[TopicSpec]:
    """Every topic this stage reads and writes, with `partitions` partitions. The samples topic,
    the cluster partials and the tick topic are co-partitioned with the node state and the
    watermarks, and so are the tables' changelogs (Faust creates those; one left by an earlier
    run with another count would make every event fail): another count is refused."""
    co_partitioned = {settings.topics.samples, settings.cluster_partials_topic, settings.ticks_topic}
    specs = [TopicSpec(name, settings.partitions, dict(config or {}), same_partitions=name in co_partitioned)
             for name in owned_topics(settings)]
    specs += [TopicSpec(f"{app_id(settings)}-{table}-changelog", settings.partitions, create=False,
                        same_partitions=True) for table in TABLES]
    return specs


def ensure_topics(settings: StreamSettings, connection: KafkaConnection) -> None:
    """Create the topics before Faust subscribes (Faust ignores a subscribed topic that does not
    exist yet until the next rebalance) and refuse co-partitioned ones with another count."""
    ensure_pipeline_topics(connection, topic_specs(settings), client_id="kpp-stream-setup")


def create_app(settings: StreamSettings, connection: KafkaConnection) -> faust.App:
    os.makedirs(settings.data_dir, exist_ok=True)
    web: dict = {"web_enabled": False}
    if settings.web_port is not None:
        web = {"web_enabled": True, "web_port": settings.web_port, "web_bind": "127.0.0.1"}
    app = faust.App(
        app_id(settings),
        **connection.faust_settings(),
        store="memory://",  # tables live in memory, restored from their changelog topics
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        processing_guarantee="at_least_once",
        key_serializer="raw",
        value_serializer="raw",
        datadir=settings.data_dir,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=1000,
        # A worker killed without leaving the group holds its partitions until the session
        # times out (Faust's default is 60 s); 20 s keeps recovery quick without flapping.
        broker_session_timeout=20.0,
        broker_heartbeat_interval=3.0,
        broker_commit_interval=2.0,
        producer_linger_ms=5,
        producer_partitioner=KeyPartitioner(),  # Kafka's default, each key's hash remembered
        # node states are ~10 KB: with the default 16 KiB batches every changelog write is a
        # request of its own
        producer_max_batch_size=1 << 20,
        producer_max_request_size=8 << 20,
        stream_buffer_maxsize=4096,
        # scrape records are ~14 KB: fetch up to 8 MB per partition, not 1 MB (~75 records)
        consumer_max_fetch_size=8 << 20,
        autodiscover=False,
        **web,
    )
    from streams.agents import wire  # agents need the app

    wire(app, settings, connection)
    return app
