"""The pipeline's Kafka topics and groups, administered: one implementation for every stage
and tool that creates topics (`kpp topics ensure`, `kpp stream` at start-up, `kpp replay`,
`kpp import`), describes them (`kpp topics describe`), deletes them, or reads a consumer
group's lag.

A caller describes the topics it needs as `TopicSpec`s; `ensure_topics` creates the missing
ones (partitions, replication factor, configuration such as `retention.ms`) and leaves
existing ones as they are, so running it again is a no-op. A topic whose partition count
must equal the caller's (co-partitioned state: the samples topic, the stream's internal
topics and table changelogs) is refused with one line when it differs; any other difference
is only reported. `plan_topics` is the pure part and is what the tests exercise most.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

from contracts.errors import ConfigError, KppError
from kafka_io.connection import KafkaConnection, KafkaUnavailableError

log = logging.getLogger("kpp.topics")

# -1: the broker's default.replication.factor (Kafka 2.4+), so a three-broker cluster gets
# its usual three replicas and a single dev broker one, without a flag.
BROKER_DEFAULT_REPLICATION = -1
METADATA_WAIT_S = 10.0


class TopicSetupError(KppError):
    """The broker refused to create or describe a topic (authorization, policy, a replication
    factor larger than the cluster): a Kafka error, like an unreachable broker."""

    exit_code = KafkaUnavailableError.exit_code


class TopicPartitionMismatch(ConfigError):
    """An existing co-partitioned topic has another partition count than the one asked for."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)  # e.g. {"retention.ms": "-1"}, on creation only
    create: bool = True  # False: created by someone else (Faust's changelogs), only checked if present
    same_partitions: bool = False  # True: another count is refused (co-partitioned with the samples topic)

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ConfigError(f"topic {self.name!r}: partitions must be >= 1, not {self.partitions}")


@dataclass(frozen=True)
class TopicPlan:
    to_create: tuple[TopicSpec, ...]
    present: tuple[str, ...]  # exist with the wanted count (or are not co-partitioned and differ: see below)
    refused: tuple[tuple[str, int, int], ...]  # (name, partitions it has, partitions wanted)
    differing: tuple[tuple[str, int, int], ...]  # the same, for topics where the count does not matter


def plan_topics(specs: Iterable[TopicSpec], existing: Mapping[str, int]) -> TopicPlan:
    """What to do about `specs`, given the partition counts of the topics that exist."""
    to_create: list[TopicSpec] = []
    present: list[str] = []
    refused: list[tuple[str, int, int]] = []
    differing: list[tuple[str, int, int]] = []
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            continue
        seen.add(spec.name)
        have = existing.get(spec.name)
        if have is None:
            if spec.create:
                to_create.append(spec)
            continue
        present.append(spec.name)
        if have != spec.partitions:
            (refused if spec.same_partitions else differing).append((spec.name, have, spec.partitions))
    return TopicPlan(tuple(to_create), tuple(present), tuple(refused), tuple(differing))


def mismatch_message(name: str, have: int, want: int) -> str:
    return (f"topic {name!r} has {have} partitions but --partitions is {want}: they must be equal "
            "(co-partitioned state); start with the matching --partitions, or delete the topic")


@dataclass(frozen=True)
class EnsuredTopics:
    created: tuple[str, ...]
    present: tuple[str, ...]
    differing: tuple[tuple[str, int, int], ...]


def ensure_topics(connection: KafkaConnection, specs: Sequence[TopicSpec], *, client_id: str = "kpp-topics",
                  replication_factor: int = BROKER_DEFAULT_REPLICATION) -> EnsuredTopics:
    """Create the missing topics of `specs`, then check every one that exists. Raises
    TopicPartitionMismatch (one line) for a co-partitioned topic with another count,
    TopicSetupError when the broker refuses, KafkaUnavailableError when none answers."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    try:
        admin = KafkaAdminClient(**connection.kafka_python_kwargs(), client_id=client_id)
    except (KafkaError, OSError) as exc:
        raise KafkaUnavailableError(f"Kafka at {connection.describe()}: {connection.explain(exc)}") from None
    try:
        plan = plan_topics(specs, _partition_counts(admin, [s.name for s in specs]))
        created: list[str] = []
        for spec in plan.to_create:  # one request per topic: "already exists" is then about that one
            try:
                admin.create_topics([NewTopic(spec.name, spec.partitions, replication_factor,
                                              topic_configs=dict(spec.config) or None)])
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass  # another worker or job was quicker: checked below like any existing topic
        if plan.to_create:
            # Re-read (metadata of a new topic may take a moment to show its partitions): what a
            # concurrent creator made is checked like the rest.
            deadline = time.monotonic() + METADATA_WAIT_S
            while True:
                plan = plan_topics(specs, _partition_counts(admin, [s.name for s in specs]))
                if not plan.to_create or time.monotonic() >= deadline:
                    break
                time.sleep(0.2)
            if plan.to_create:
                raise TopicSetupError(f"Kafka at {connection.describe()} did not show "
                                      + ", ".join(s.name for s in plan.to_create) + " after creating it")
    except KafkaError as exc:
        raise TopicSetupError(f"Kafka at {connection.describe()} refused the topic set-up: "
                              f"{connection.explain(exc)}") from None
    finally:
        admin.close()
    if plan.refused:
        raise TopicPartitionMismatch(mismatch_message(*plan.refused[0]))
    for name, have, want in plan.differing:
        log.warning("topic %s has %d partitions, not %d: kept (its count does not affect correctness)",
                    name, have, want)
    return EnsuredTopics(tuple(created), tuple(n for n in plan.present if n not in created), plan.differing)


def _partition_counts(admin, names: Sequence[str]) -> dict[str, int]:  # noqa: ANN001 - kafka-python's admin
    existing = set(admin.list_topics())
    wanted = sorted(set(names) & existing)
    counts: dict[str, int] = {}
    for topic in admin.describe_topics(wanted) if wanted else ():
        name = topic.get("name") or topic.get("topic")  # kafka-python 3 says "name"
        partitions = topic.get("partitions") or ()
        if name and partitions:
            counts[name] = len(partitions)
    return counts


@dataclass(frozen=True)
class TopicDescription:
    name: str
    partitions: int
    config: Mapping[str, str]  # the keys asked for, as the broker applies them (its defaults included)


DESCRIBED_CONFIG = ("retention.ms", "cleanup.policy", "max.message.bytes")


def describe_topics(connection: KafkaConnection, names: Sequence[str], *,
                    config_keys: Sequence[str] = DESCRIBED_CONFIG,
                    client_id: str = "kpp-topics") -> dict[str, TopicDescription]:
    """What the broker says of each topic of `names` that exists: its partition count and the
    values of `config_keys`. A missing topic is absent from the result."""
    from kafka.admin import ConfigResource, ConfigResourceType
    from kafka.errors import KafkaError

    with _admin(connection, client_id) as admin:
        try:
            counts = _partition_counts(admin, names)
            configs: dict[str, dict[str, str]] = {name: {} for name in counts}
            if counts:
                responses = admin.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, name, configs=list(config_keys)) for name in counts],
                    config_filter="all")  # kafka-python 3 reports only values set on the topic by default
                for response in responses if isinstance(responses, list) else [responses]:
                    for name, values in response["topic"].items():
                        configs.setdefault(name, {}).update(
                            {key: str(entry["value"]) for key, entry in values.items() if key in config_keys})
        except KafkaError as exc:
            raise TopicSetupError(f"Kafka at {connection.describe()} refused to describe topics: "
                                  f"{connection.explain(exc)}") from None
    return {name: TopicDescription(name, counts[name], configs.get(name, {})) for name in sorted(counts)}


def delete_topics(connection: KafkaConnection, names: Sequence[str], *,
                  client_id: str = "kpp-topics") -> tuple[str, ...]:
    """Delete the topics of `names` that exist (their records are gone for good); returns the
    names deleted. A missing topic is not an error: deleting twice is a no-op."""
    from kafka.errors import KafkaError, UnknownTopicOrPartitionError

    with _admin(connection, client_id) as admin:
        try:
            existing = sorted(set(names) & set(admin.list_topics()))
            deleted: list[str] = []
            for name in existing:  # one request per topic: "unknown topic" is then about that one
                try:
                    admin.delete_topics([name])
                    deleted.append(name)
                except UnknownTopicOrPartitionError:
                    pass  # deleted meanwhile by someone else
        except KafkaError as exc:
            raise TopicSetupError(f"Kafka at {connection.describe()} refused to delete topics: "
                                  f"{connection.explain(exc)}") from None
    return tuple(deleted)


@contextmanager
def _admin(connection: KafkaConnection, client_id: str) -> Iterator[Any]:
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(**connection.kafka_python_kwargs(), client_id=client_id)
    except (KafkaError, OSError) as exc:
        raise KafkaUnavailableError(f"Kafka at {connection.describe()}: {connection.explain(exc)}") from None
    try:
        yield admin
    finally:
        admin.close()


# -- consumer group lag ------------------------------------------------------------------


def lag_from_offsets(committed: Mapping[Any, int | None], beginning: Mapping[Any, int],
                     end: Mapping[Any, int]) -> dict[Any, int]:
    """Records behind per partition: end offset - committed offset (the beginning offset where
    the group has committed nothing yet: it starts from the earliest record)."""
    lag = {}
    for tp, end_offset in end.items():
        done = committed.get(tp)
        if done is None or done < 0:
            done = beginning.get(tp, 0)
        lag[tp] = max(0, end_offset - done)
    return lag


class GroupLagReader:
    """Reads a consumer group's lag on some topics, again and again, with clients of its own
    (an admin client for the committed offsets, a group-less consumer for the end offsets),
    so a caller that polls (self-metrics, benches, tests) does not bootstrap twice per read.
    Raises KafkaUnavailableError when Kafka cannot be reached at construction; a read while
    the broker is away raises the client's error (close and build a new reader)."""

    def __init__(self, connection: KafkaConnection, group_id: str, topics: Sequence[str], *,
                 client_id: str = "kpp-group-lag") -> None:
        from kafka import KafkaConsumer
        from kafka.admin import KafkaAdminClient
        from kafka.errors import KafkaError

        self.group_id = group_id
        self.topics = list(topics)
        kwargs = connection.kafka_python_kwargs()
        self._admin = self._consumer = None
        try:
            self._admin = KafkaAdminClient(**kwargs, client_id=client_id)
            self._consumer = KafkaConsumer(**kwargs, group_id=None, enable_auto_commit=False, client_id=client_id)
        except (KafkaError, OSError) as exc:
            self.close()
            raise KafkaUnavailableError(f"Kafka at {connection.describe()}: {connection.explain(exc)}") from None

    def read(self) -> dict[tuple[str, int], int]:
        """{(topic, partition): records not committed}, for every partition of the topics the
        broker knows (a topic it does not know has no entry)."""
        from kafka import TopicPartition

        consumer = self._consumer
        tps = [TopicPartition(t, p) for t in self.topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        offsets = self._admin.list_group_offsets({self.group_id: None}).get(self.group_id, {})
        committed = {tp: meta.offset for tp, meta in offsets.items()}
        end = consumer.end_offsets(tps) if tps else {}
        uncommitted = [tp for tp in tps if committed.get(tp) is None or committed[tp] < 0]
        beginning = consumer.beginning_offsets(uncommitted) if uncommitted else {}
        return {(tp.topic, tp.partition): n for tp, n in lag_from_offsets(committed, beginning, end).items()}

    def close(self) -> None:
        for client in (self._admin, self._consumer):
            if client is not None:
                try:
                    client.close()
                except Exception:  # noqa: BLE001 - closing after a failure: nothing left to do
                    pass
        self._admin = self._consumer = None

    def __enter__(self) -> "GroupLagReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def group_lag(connection: KafkaConnection, group_id: str, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    """{(topic, partition): records of `topics` the consumer group `group_id` has not
    committed}, once (GroupLagReader for repeated reads)."""
    with GroupLagReader(connection, group_id, topics) as reader:
        return reader.read()
