"""Options every long-running command resolves the same way: command-line flag, then
environment variable, then a TOML file (`--config`), then the default.

A command declares its options once as `Option`s; `add_to()` builds the argparse flags
(with the environment variable and default in the help text) and `resolve()` merges the
sources into a plain dict keyed by option name.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from contracts.errors import ConfigError
from kafka_io.connection import KafkaConnection

SOURCES_NOTE = """\
Settings come from flags, then environment variables, then the TOML file given with
--config (keys are the flag names with underscores), then defaults."""


@dataclass(frozen=True)
class Option:
    name: str  # dest and TOML key, e.g. "scrape_interval"
    help: str
    default: Any = None
    env: str | None = None
    kind: Callable[[str], Any] = str
    repeated: bool = False  # flag may repeat; env is comma-separated; TOML is a list
    flag_only: bool = False  # booleans: store_true
    metavar: str | None = None
    choices: Sequence[str] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def add_command(subparsers: argparse._SubParsersAction, name: str, *, help: str, description: str,
                options: Sequence[Option], config_env: str) -> argparse.ArgumentParser:
    """A long-running stage's subcommand: its options, `--config FILE` and the Kafka flags."""
    parser = subparsers.add_parser(name, help=help, description=description.rstrip() + "\n\n" + SOURCES_NOTE,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE", default=os.environ.get(config_env),
                        help=f"TOML file with settings (env {config_env})")
    add_to(parser, options, name)
    KafkaConnection.add_cli_arguments(parser)
    return parser


def resolve_command(options: Sequence[Option], args: argparse.Namespace) -> dict[str, Any]:
    """The settings of a command built with `add_command`: flags > env > `--config` file > defaults."""
    return resolve(options, args, load_toml(args.config))


def add_to(parser: argparse.ArgumentParser, options: Sequence[Option], title: str | None = None) -> None:
    group = parser.add_argument_group(title) if title else parser
    for opt in options:
        where = []
        if opt.env:
            where.append(f"env {opt.env}")
        if opt.default not in (None, (), [], False, ""):
            shown = ", ".join(map(str, opt.default)) if isinstance(opt.default, (list, tuple)) else opt.default
            where.append(f"default {shown}")
        help_text = opt.help + (f" ({', '.join(where)})" if where else "")
        if opt.flag_only:
            group.add_argument(opt.flag, dest=opt.name, action="store_true", default=None, help=help_text)
        else:
            group.add_argument(opt.flag, dest=opt.name, default=None, help=help_text, metavar=opt.metavar,
                               action="append" if opt.repeated else "store", choices=opt.choices)


def load_toml(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path!r} is not valid TOML: {exc}") from None
    return {k.replace("-", "_"): v for k, v in data.items()}


def resolve(options: Sequence[Option], args: argparse.Namespace, file_values: Mapping[str, Any],
            env: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if env is None else env
    known = {opt.name for opt in options}
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) in the config file: {', '.join(unknown)}")
    result: dict[str, Any] = {}
    for opt in options:
        value = getattr(args, opt.name, None)
        source = f"flag {opt.flag}"
        if value is None and opt.env and env.get(opt.env, "") != "":
            raw = env[opt.env]
            value = [v.strip() for v in raw.split(",") if v.strip()] if opt.repeated else raw
            source = f"environment variable {opt.env}"
        if value is None and opt.name in file_values:
            value = file_values[opt.name]
            source = f"config file setting {opt.name!r}"
            if opt.repeated and not isinstance(value, list):
                value = [value]
        if value is None:
            default = opt.default
            # Defaults may be written as users write them ("256MiB"): convert like user input.
            needs_kind = isinstance(default, str) and opt.kind is not str
            result[opt.name] = _convert(opt, default, f"default of {opt.flag}") if needs_kind else default
            continue
        result[opt.name] = _convert(opt, value, source)
    return result


def _convert(opt: Option, value: Any, source: str) -> Any:
    if opt.flag_only:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{source}: {value!r} is not a boolean (true/false)")
    try:
        if opt.repeated:
            return [opt.kind(str(v)) if not isinstance(v, (int, float)) else opt.kind(str(v)) for v in value]
        return opt.kind(str(value))
    except (ValueError, ConfigError) as exc:
        raise ConfigError(f"{source}: {value!r} is not valid: {exc}") from None


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def byte_size(text: str) -> int:
    """`16MiB`, `256M`, `1GiB`, `1048576` → bytes."""
    text = text.strip()
    units = {"": 1, "K": 1000, "KB": 1000, "KIB": 1024, "M": 10**6, "MB": 10**6, "MIB": 1024**2,
             "G": 10**9, "GB": 10**9, "GIB": 1024**3}
    number = text.rstrip("KkMmGgIiBb")
    unit = text[len(number):].upper()
    if unit not in units or not number:
        raise ValueError("expected a size like 16MiB, 500KB or 1048576")
    value = int(float(number) * units[unit])
    if value <= 0:
        raise ValueError("must be positive")
    return value
