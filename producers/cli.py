"""Subcommands of the producer stage."""

from producers import cli_archive, cli_parse, cli_produce


def register(subparsers) -> None:
    cli_produce.register(subparsers)
    cli_parse.register(subparsers)
    cli_archive.register(subparsers)
