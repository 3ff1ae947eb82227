"""`kpp`: one subcommand per job. Each stage registers its own subcommands from its
package's `cli` module (`register(subparsers)`), so this file stays a table of contents."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from contracts.errors import KppError

# (module, purpose shown in `kpp --help`); order is the order of the help text.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "stack.cli",
    "simulator.cli",
    "producers.cli",
    "streams.cli",
    "streams.cli_replay",
    "sinks.cli",
    "kpp.topics",
    "kpp.tail",
    "kpp.report",
    "kpp.demo",
)


# Subcommands that touch no Kafka, store or HTTP client: when one is asked for, only its module
# is imported (the full table pulls in kafka, Faust and httpx, ~0.4 s of start-up that would
# dominate `kpp parse` of a scrape-sized file).
STANDALONE_SUBCOMMANDS: dict[str, str] = {"parse": "producers.cli_parse"}


def requested_command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first token that is not a global option
    or its value), or None."""
    tokens = iter(argv)
    for token in tokens:
        if token == "--log-level":
            next(tokens, None)
        elif not token.startswith("-"):
            return token
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or, for a STANDALONE_SUBCOMMANDS `command`, one that knows only it."""
    parser = argparse.ArgumentParser(
        prog="kpp",
        description=(
            "kube-proxy pipeline: scrape kube-proxy on every node, stream the samples through "
            "Kafka, compute windowed rates, percentiles, health and the network-programming SLI, "
            "and write them to a time-series store."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--log-level", default=os.environ.get("KPP_LOG_LEVEL", "INFO"),
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="log verbosity (env KPP_LOG_LEVEL, default INFO)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    standalone = STANDALONE_SUBCOMMANDS.get(command or "")
    for module_name in (standalone,) if standalone else SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # stage not built yet
                continue
            raise
        module.register(subparsers)
    return parser


def _quiet_client_logs(log_level: str) -> None:
    # No secret in any printed record, ours or a client library's (e.g. kafka-python's
    # configuration dump at DEBUG): a filter on the handlers every record ends up in.
    from kafka_io.connection import capture_client_failures, redact_secrets_in_logs

    redact_secrets_in_logs()
    # Client libraries log every connection at INFO and every failed reconnect at ERROR:
    # a storm during an outage. Our stages log each outage once, when it starts and ends;
    # the Kafka clients' records are kept back, but the cause of a failed connection
    # (refused credentials, TLS) is taken from them (kafka_io/connection.py).
    capture_client_failures("kafka", show_below_critical=log_level == "DEBUG")
    if log_level != "DEBUG":
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _kafka_failure(args: argparse.Namespace, exc: Exception) -> KppError | None:
    """A Kafka client library's exception that escaped a command, as the one line (broker,
    cause, fix) and exit code of kafka_io/connection.py; None for anything else."""
    from kafka_io.connection import KafkaConnection, is_client_error

    if not is_client_error(exc):
        return None
    try:
        return KafkaConnection.from_sources(args).failure(exc)
    except Exception:  # noqa: BLE001 - the settings were read once already; report the bug as a bug
        return None


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(requested_command(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command not in STANDALONE_SUBCOMMANDS:  # these use no client library
        _quiet_client_logs(args.log_level)
    try:
        return int(args.func(args) or 0)
    except KppError as exc:
        print(f"kpp {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Whoever read our output went away (`kpp topics describe | head -1`): not an error of
        # ours. Point stdout at /dev/null so the flush at exit does not fail again, and exit as
        # a process killed by SIGPIPE would (128 + 13), as shell pipelines expect.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # a bug: say so in one line; the traceback is for --log-level DEBUG
        logging.getLogger("kpp").debug("internal error", exc_info=True)
        kafka_failure = _kafka_failure(args, exc)
        if kafka_failure is not None:  # a Kafka client gave up (broker gone, ACLs): not a bug
            print(f"kpp {args.command}: error: {kafka_failure}", file=sys.stderr)
            return kafka_failure.exit_code
        print(f"kpp {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(run with --log-level DEBUG for the traceback, and please report it)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
