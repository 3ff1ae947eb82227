"""The Faust application of `kpp stream`: configuration only (the agents are in
streams/agents.py, the logic in the pure modules)."""

from __future__ import annotations

import os

import faust

from contracts.errors import ConfigError
from contracts.kafka import KafkaConnection
from streams.config import StreamSettings


TABLES = ("node-state", "cluster-state")  # the changelog-backed tables agents.py declares


def app_id(settings: StreamSettings) -> str:
    """Consumer group and changelog topic names: one pipeline per topic prefix."""
    return f"kpp-streams.{settings.topic_prefix}"


def owned_topics(settings: StreamSettings) -> list[str]:
    topics = settings.topics
    return [topics.samples, settings.cluster_partials_topic, settings.ticks_topic, topics.late, topics.dlq,
            *topics.derived()]


def ensure_topics(settings: StreamSettings, connection: KafkaConnection) -> None:
    """Create the topics this stage reads and writes with `partitions` partitions before Faust
    subscribes (Faust ignores a subscribed topic that does not exist yet until the next
    rebalance), and refuse a samples topic whose partition count differs: the node state,
    the watermarks and the tick topic are co-partitioned with it."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**connection.kafka_python_kwargs(), client_id="kpp-stream-setup")
    try:
        existing = set(admin.list_topics())
        missing = [name for name in owned_topics(settings) if name not in existing]
        if missing:
            try:
                admin.create_topics([NewTopic(name, settings.partitions, 1) for name in missing])
            except TopicAlreadyExistsError:
                pass  # another worker was quicker
        # The tables' changelogs too: a changelog left by an earlier run with another partition
        # count would make every event fail (Faust's PartitionsMismatch), not the start-up.
        changelogs = [name for name in (f"{app_id(settings)}-{table}-changelog" for table in TABLES)
                      if name in existing]
        described = admin.describe_topics([settings.topics.samples, settings.cluster_partials_topic,
                                           settings.ticks_topic, *changelogs])
    finally:
        admin.close()
    for topic in described:
        count = len(topic.get("partitions") or ())
        if count and count != settings.partitions:
            name = topic.get("name") or topic.get("topic")  # kafka-python 3 says "name"
            raise ConfigError(f"topic {name!r} has {count} partitions but --partitions is "
                              f"{settings.partitions}: they must be equal (co-partitioned state); "
                              "start with the matching --partitions, or delete the topic")


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
