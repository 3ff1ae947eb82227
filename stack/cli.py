"""`kpp stack up | down | status`: the local Kafka + VictoriaMetrics for the demo and tests."""

from __future__ import annotations

import argparse

from stack.kafka import KafkaService
from stack.settings import StackSettings
from stack.victoriametrics import VictoriaMetricsService

EPILOG = """\
environment:
  KPP_STATE_DIR              state folder for jars, data, logs, PID files (default .kpp)
  KPP_KAFKA_PORT             Kafka PLAINTEXT port on 127.0.0.1 (default 9092)
  KPP_KAFKA_CONTROLLER_PORT  KRaft controller port (default 9093)
  KPP_KAFKA_SASL_SSL         1: also a SASL_SSL listener (SCRAM-SHA-512 user, private CA;
                             files in $KPP_STATE_DIR/kafka/secrets) (default off)
  KPP_KAFKA_SASL_SSL_PORT    its port on 127.0.0.1 (default 9094)
  KPP_KAFKA_SASL_USERNAME    its SCRAM user, created when the storage is formatted (default kpp)
  KPP_VM_PORT                VictoriaMetrics HTTP port on 127.0.0.1 (default 8428)
  KAFKA_BOOTSTRAP            use this existing broker; start no Kafka
  VM_URL                     use this existing VictoriaMetrics; start none

`up` is idempotent and returns once Kafka answers a metadata request and
VictoriaMetrics answers /health. `down` stops only the processes `up` started.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stack", help="start, stop or show the local Kafka + VictoriaMetrics",
        description="Run the local stack the demo and the tests use: Apache Kafka (single-node "
                    "KRaft, Java 17) and VictoriaMetrics, both on 127.0.0.1.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=("up", "down", "status"),
                        help="up: start and wait until healthy; down: stop; status: show what runs where "
                             "(exit 3 unless all are healthy)")
    parser.set_defaults(func=run)


def services(settings: StackSettings) -> list[KafkaService | VictoriaMetricsService]:
    return [KafkaService(settings), VictoriaMetricsService(settings)]


def run(args: argparse.Namespace) -> int:
    settings = StackSettings.from_env()
    stack = services(settings)
    if args.action == "up":
        for service in stack:
            print(service.up(), flush=True)
        print(f"export KAFKA_BOOTSTRAP={settings.kafka_bootstrap} VM_URL={settings.vm_url}")
        if settings.kafka_secured_bootstrap:
            env = KafkaService(settings).secured_client_env()
            print("# the SASL_SSL listener (the password stays in its file):")
            print("export " + " ".join(f"{name}={value}" for name, value in env.items()))
        return 0
    if args.action == "down":
        for service in reversed(stack):  # Kafka last: nothing of ours reads the store after it
            print(service.down(), flush=True)
        return 0
    statuses = [service.status() for service in stack]
    rows = [("SERVICE", "STATE", "ADDRESS")] + statuses
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"state folder: {settings.state_dir}  logs: {settings.log_dir}")
    # Scripts (the Makefile) ask whether everything is up: exit 3 when something is not.
    return 0 if all(state.endswith("healthy") and "not" not in state and "NOT" not in state
                    for _, state, _ in statuses) else 3
