"""The container image's HEALTHCHECK (`python -m kpp.healthcheck`): asks the stage running as
the container's main process for its /healthz, on the address that stage listens on.

The image has no curl, and one image runs every stage: the address is read from the main
process's own command line (`--listen`, else the stage's environment variable, else its
default). Commands without a health endpoint (`kpp simulate`, a one-shot command) have
nothing to check and count as healthy. Standard library only: it runs every 30 s and must
not pay for the stages' imports."""

from __future__ import annotations

import os
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Sequence

# stage -> (environment variable of --listen, default address); tests/deploy/test_image.py
# checks these against the stages' own options.
LISTEN: dict[str, tuple[str, str]] = {
    "produce": ("KPP_LISTEN", "127.0.0.1:9811"),
    "sink": ("KPP_SINK_LISTEN", "127.0.0.1:9812"),
    "stream": ("KPP_STREAM_LISTEN", "127.0.0.1:9813"),
}
CONFIG_ENV = {"produce": "KPP_PRODUCE_CONFIG", "sink": "KPP_SINK_CONFIG", "stream": "KPP_STREAM_CONFIG"}


def _flag(argv: Sequence[str], name: str) -> str | None:
    for i, token in enumerate(argv):
        if token == name and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith(name + "="):
            return token.split("=", 1)[1]
    return None


def health_url(cmdline: Sequence[str], env: Mapping[str, str]) -> str | None:
    """The /healthz URL of the stage `cmdline` runs (argv of the main process), or None when it
    runs none with a health endpoint or has it switched off (an empty --listen)."""
    names = [os.path.basename(t) for t in cmdline]
    if "kpp" not in names:
        return None
    argv = list(cmdline[names.index("kpp") + 1:])
    while argv and argv[0].startswith("-"):  # global options: --log-level LEVEL
        argv = argv[2:] if "=" not in argv[0] else argv[1:]
    if not argv or argv[0] not in LISTEN:
        return None
    stage, args = argv[0], argv[1:]
    variable, default = LISTEN[stage]
    listen = _flag(args, "--listen")
    if listen is None:
        listen = env.get(variable) or None
    if listen is None:
        config = _flag(args, "--config") or env.get(CONFIG_ENV[stage])
        if config:
            try:
                listen = tomllib.loads(Path(config).read_text()).get("listen")
            except (OSError, tomllib.TOMLDecodeError):
                listen = None  # the stage itself reports a bad config file
    if listen is None:
        listen = default
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def main() -> int:
    # The container's main process; another PID for checking a stage outside a container.
    pid = os.environ.get("KPP_HEALTHCHECK_PID", "1")
    try:
        cmdline = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError as exc:
        print(f"healthcheck: cannot read the main process's command line: {exc}", file=sys.stderr)
        return 1
    url = health_url(cmdline, os.environ)
    if url is None:
        print("healthcheck: this command has no health endpoint")
        return 0
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            print(f"healthcheck: {url}: {response.status} {response.read(200).decode(errors='replace').strip()}")
            return 0
    except urllib.error.HTTPError as exc:
        print(f"healthcheck: {url}: {exc.code} {exc.read(200).decode(errors='replace').strip()}", file=sys.stderr)
    except (OSError, ValueError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
