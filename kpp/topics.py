"""`kpp topics ensure`: create every topic of the pipeline before any stage starts (a
Kubernetes Job, a deploy script), with the partition count the stream workers will use and
the retention wanted. Idempotent: existing topics are left as they are, and a co-partitioned
one with another partition count is refused in one line, as `kpp stream` refuses it.

`kpp topics describe`: what the broker has of those topics (partitions, retention, cleanup
policy, record size limit), and which are missing or would be refused."""

from __future__ import annotations

import argparse
import logging
import sys

from contracts.errors import ConfigError
from kafka_io.connection import KafkaConnection
from runtime.options import Option, add_command, resolve_command
from kafka_io.admin import (BROKER_DEFAULT_REPLICATION, EnsuredTopics, TopicDescription, TopicSpec, describe_topics,
                            ensure_topics)
from contracts.topics import DEFAULT_PREFIX

log = logging.getLogger("kpp.topics")

UNLIMITED = ("unlimited", "none", "-1")


def retention_ms(text: str) -> int | None:
    """`7d`, `36h`, `unlimited` → retention.ms (-1 for unlimited); empty → None (the broker's)."""
    from sinks.timerange import parse_duration_ms

    text = text.strip().lower()
    if not text:
        return None
    if text in UNLIMITED:
        return -1
    value = parse_duration_ms(text)
    if value <= 0:
        raise ValueError("must be a positive duration or 'unlimited'")
    return value


def replication_factor(text: str) -> int:
    value = int(text)
    if value < 1 and value != BROKER_DEFAULT_REPLICATION:
        raise ValueError("must be >= 1 (or -1 for the broker's default.replication.factor)")
    return value


def partition_count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be >= 1")
    return value


OPTIONS = (
    Option("topic_prefix", "prefix of the topic names", DEFAULT_PREFIX, "KPP_TOPIC_PREFIX", metavar="PREFIX"),
    Option("partitions", "partitions of every topic: the same --partitions the stream workers get "
           "(workers beyond it sit idle)", 1, "KPP_STREAM_PARTITIONS", kind=partition_count, metavar="N"),
    Option("retention", "retention.ms of the topics created, as a duration (7d, 36h) or 'unlimited'; "
           "the samples topic is the history `kpp replay` reads (default: the broker's log.retention)",
           None, "KPP_TOPIC_RETENTION", kind=retention_ms, metavar="DURATION"),
    Option("replication_factor", "replicas of each topic created (default: the broker's "
           "default.replication.factor)", BROKER_DEFAULT_REPLICATION, "KPP_TOPIC_REPLICATION_FACTOR",
           kind=replication_factor, metavar="N"),
)

DESCRIPTION = """\
Create every topic the pipeline uses: <prefix>.samples, the derived topics (.rates,
.quantiles, .gauges, .health, .slo), .late, .dlq and the stream's own .cluster-partials and
.stream-ticks, each with --partitions partitions. Run it before the stream workers start
(the Helm chart runs it as a pre-install/pre-upgrade Job); `kpp stream` creates missing
topics the same way.

Idempotent: topics that exist are left as they are (their configuration is not changed).
The samples topic, the stream's internal topics and its tables' changelogs are
co-partitioned: when one exists with another partition count the command stops with one
line and exit code 2 (start with the matching --partitions, or use a new --topic-prefix).
Exit code 3: Kafka could not be reached or refused the set-up (authorization, policy)."""


DESCRIBE_DESCRIPTION = """\
Show every topic the pipeline uses (the names `ensure` creates for --topic-prefix) as the
broker has it: partitions, retention.ms, cleanup.policy and max.message.bytes; a missing
topic is listed as missing. A co-partitioned topic (the samples topic, the stream's internal
topics and changelogs) whose partition count differs from --partitions is marked: `kpp
stream` with that --partitions would refuse to start.
Exit code 0 when every topic exists with the partitions the stream needs, 1 otherwise,
3 when Kafka cannot be reached."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("topics", help="create (ensure) or show (describe) the pipeline's Kafka topics",
                                   description="Manage the pipeline's Kafka topics.")
    actions = parser.add_subparsers(dest="topics_action", metavar="ACTION", title="actions")
    ensure = add_command(actions, "ensure", help="create every pipeline topic that is missing; idempotent",
                         description=DESCRIPTION, options=OPTIONS, config_env="KPP_TOPICS_CONFIG")
    ensure.set_defaults(func=run_ensure)
    describe = add_command(actions, "describe", help="show the pipeline's topics as the broker has them",
                           description=DESCRIBE_DESCRIPTION, options=OPTIONS[:2], config_env="KPP_TOPICS_CONFIG")
    describe.set_defaults(func=run_describe)
    parser.set_defaults(func=lambda _args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_ensure(args: argparse.Namespace) -> int:
    from streams.app import topic_specs  # the stream's own list: one source for the names
    from streams.config import StreamSettings

    values = resolve_command(OPTIONS, args)
    try:
        settings = StreamSettings(topic_prefix=values["topic_prefix"], partitions=values["partitions"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    config = {} if values["retention"] is None else {"retention.ms": str(values["retention"])}
    connection = KafkaConnection.from_sources(args)
    connection.check()  # unreachable or refused credentials: one line, exit 3/4
    result = ensure_topics(connection, topic_specs(settings, config), client_id="kpp-topics",
                           replication_factor=values["replication_factor"])
    print(summary(result, settings.partitions, config))
    return 0


def summary(result: EnsuredTopics, partitions: int, config: dict[str, str]) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in config.items())
    lines = [f"created {name} ({partitions} partitions{', ' + settings if settings else ''})"
             for name in result.created]
    differing = {name for name, _have, _want in result.differing}
    lines += [f"exists  {name}" for name in result.present if name not in differing]
    lines += [f"exists  {name} with {have} partitions, not {want} (kept: not co-partitioned)"
              for name, have, want in result.differing]
    lines.append(f"{len(result.created)} created, {len(result.present)} already there")
    return "\n".join(lines)


def run_describe(args: argparse.Namespace) -> int:
    from streams.app import topic_specs
    from streams.config import StreamSettings

    values = resolve_command(OPTIONS[:2], args)
    try:
        settings = StreamSettings(topic_prefix=values["topic_prefix"], partitions=values["partitions"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    connection = KafkaConnection.from_sources(args)
    connection.check()
    specs = topic_specs(settings, {})
    described = describe_topics(connection, [spec.name for spec in specs], client_id="kpp-topics")
    lines, complete = describe_lines(specs, described)
    print("\n".join(lines))
    return 0 if complete else 1


def describe_lines(specs: list[TopicSpec], described: dict[str, TopicDescription]) -> tuple[list[str], bool]:
    """One line per topic of `specs` (changelogs Faust makes at start-up only when they
    exist), and whether the stream could start on them as they are."""
    lines: list[str] = []
    complete = True
    shown = [spec for spec in specs if spec.create or spec.name in described]
    width = max((len(spec.name) for spec in shown), default=0)
    for spec in shown:
        found = described.get(spec.name)
        if found is None:
            lines.append(f"{spec.name:<{width}}  missing")
            complete = False
            continue
        config = "  ".join(f"{key}={value}" for key, value in sorted(found.config.items()))
        mark = ""
        if found.partitions != spec.partitions:
            mark = (f"(not {spec.partitions}: refused by the stream)" if spec.same_partitions
                    else f"(not {spec.partitions}: kept, not co-partitioned)")
            complete = complete and not spec.same_partitions
        lines.append("  ".join(part for part in (f"{spec.name:<{width}}", f"{found.partitions} partitions", config,
                                                 mark.strip()) if part))
    missing = sum(1 for spec in specs if spec.create and spec.name not in described)
    lines.append(f"{len(described)} present, {missing} missing")
    return lines, complete
