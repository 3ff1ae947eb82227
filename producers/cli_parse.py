"""`kpp parse FILE... | -`: parse Prometheus text files, print one JSON object per sample.

Each output line is ``{"name": ..., "labels": {...}, "value": ..., "timestamp_ms": null|int}``
in that key order; NaN and ±Inf values are the strings "NaN", "+Inf", "-Inf"
(`contracts.codec.float_to_json`). A file that is not valid text format 0.0.4 stops the
command with ``kpp parse: FILE:LINE: what was wrong`` on stderr and exit code 1, after the
samples of the files before it were printed; nothing of the broken file is printed (like a
failed scrape, a broken file yields no samples).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import BinaryIO

from producers.parser import ParseError, parse_json_lines

STDIN = "-"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "parse",
        help="parse Prometheus text files and print one JSON object per sample",
        description=(
            "Parse files in the Prometheus text exposition format 0.0.4 (what kube-proxy serves "
            "on /metrics) with the pipeline's strict parser, and print one JSON object per "
            'sample and line: {"name", "labels", "value", "timestamp_ms"}. NaN and infinite '
            'values are printed as the strings "NaN", "+Inf" and "-Inf"; timestamp_ms is null '
            "when the line has no timestamp. A malformed file fails as a Prometheus scrape "
            "would: the first error is reported as FILE:LINE: reason, exit code 1."
        ),
    )
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="text exposition file to parse; '-' reads standard input")
    parser.set_defaults(func=run)


def _read(path: str) -> bytes:
    if path == STDIN:
        return sys.stdin.buffer.read()
    with open(path, "rb") as handle:
        return handle.read()


def _write_samples(text: str, out: BinaryIO) -> None:
    # The whole file is parsed (and encoded) before anything is written: a broken file prints
    # nothing. Each chunk is one large write.
    for chunk in parse_json_lines(text):
        out.write(chunk)


def _error(message: str) -> int:
    print(f"kpp parse: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    try:
        for path in args.files:
            shown = "<stdin>" if path == STDIN else path
            try:
                data = _read(path)
            except OSError as exc:
                return _error(f"cannot read {shown}: {exc.strerror or exc}")
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = data.count(b"\n", 0, exc.start) + 1
                return _error(f"{shown}:{line}: not valid UTF-8 (byte {data[exc.start]:#04x} "
                              f"at offset {exc.start})")
            try:
                _write_samples(text, out)
            except ParseError as exc:
                out.flush()
                return _error(f"{shown}:{exc.line_number}: {exc.reason}")
        out.flush()
    except BrokenPipeError:
        # The reader went away (`kpp parse f | head`): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # what a shell reports for a process killed by SIGPIPE
    return 0
