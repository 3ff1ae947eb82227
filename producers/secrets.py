"""The secrets of a scrape request and keeping them out of sight.

Request headers are `NAME=VALUE`, `NAME=@PATH` (the value is the file's content, re-read when
the file changes: for tokens mounted from a Secret) or `NAME=env:VAR` (read once at start), so
that no token has to travel on the command line, where `ps` shows it to everyone on the node.
Header values, bearer tokens and URL credentials (`user:password@`) never appear in logs, in
published records or in error texts: `redact()` removes them from any text that may quote a
request, and `redact_url()` gives the form of a target URL that may be shown.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping
from urllib.parse import unquote

from contracts.errors import ConfigError

MASK = "***"
_TOKEN_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field-name
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # tab is allowed inside a field value
_SECRET_PIECES = re.compile(r"[\s\x00-\x1f\x7f]+")
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})


class SecretError(Exception):
    """A secret could not be read or used; the message names the file, never the value."""


@dataclass(frozen=True)
class HeaderSpecs:
    literal: dict[str, str] = field(default_factory=dict)  # NAME=VALUE and NAME=env:VAR, resolved
    files: dict[str, str] = field(default_factory=dict)  # NAME=@PATH: name -> path


def parse_header_specs(pairs: Iterable[str], env: Mapping[str, str] | None = None,
                       what: str = "--header") -> HeaderSpecs:
    """`["Authorization=@/run/token", "X-Scope-OrgID=env:TENANT", "X-A=b"]` → `HeaderSpecs`.
    Errors name the header, never its value."""
    env = os.environ if env is None else env
    specs = HeaderSpecs()
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ConfigError(f"{what} {redact_header_pair(pair)!r} is not NAME=VALUE, NAME=@FILE or NAME=env:VAR")
        if not _TOKEN_NAME.fullmatch(name):
            raise ConfigError(f"{what} {name!r}: not a valid header name")
        if value.startswith("@"):
            path = value[1:]
            if not os.path.isfile(path):
                raise ConfigError(f"{what} {name}: file {path!r} does not exist")
            specs.files[name] = path
            continue
        if value.startswith("env:"):
            var = value[4:]
            if not env.get(var):
                raise ConfigError(f"{what} {name}: environment variable {var!r} is not set or empty")
            value = env[var].strip()
        if _CONTROL.search(value):
            raise ConfigError(f"{what} {name}: the value contains a line break or control character")
        specs.literal[name] = value
    return specs


def redact_header_pair(pair: str) -> str:
    name, sep, _ = pair.partition("=")
    return f"{name}={MASK}" if sep else MASK


def secret_literals_on_command_line(flag_values: Iterable[str] | None) -> list[str]:
    """Names of sensitive headers given with their value on the command line."""
    names = []
    for pair in flag_values or ():
        name, sep, value = pair.partition("=")
        value = value.strip()
        if sep and name.strip().lower() in SENSITIVE_HEADERS and not value.startswith(("@", "env:")):
            names.append(name.strip())
    return names


class SecretFile:
    """A file holding one secret value (a bearer token, a header value), re-read whenever it
    changes (rotated tokens). Surrounding whitespace, e.g. the trailing newline, is dropped."""

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        self.what = what
        self._stamp: tuple[float, int, int] | None = None
        self._value = ""

    def current(self) -> str:
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_mtime, stat.st_size, stat.st_ino)
            if stamp != self._stamp:
                with open(self.path, encoding="utf-8") as fh:
                    value = fh.read().strip()
                self._stamp, self._value = stamp, value
        except OSError as exc:
            raise SecretError(f"cannot read {self.what} file {self.path!r}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise SecretError(f"{self.what} file {self.path!r} is not UTF-8 text") from None
        if _CONTROL.search(self._value):
            line = self._value[:_CONTROL.search(self._value).start()].count("\n") + 1
            raise SecretError(f"{self.what} file {self.path!r} holds a line break or control character "
                              f"inside the value (line {line}); not sent")
        if not self._value:
            raise SecretError(f"{self.what} file {self.path!r} is empty")
        return self._value


def redact_url(url: str) -> str:
    """`http://user:pw@host:1/metrics` → `http://***@host:1/metrics`; other URLs unchanged."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority = rest[:end]
    if "@" not in authority:
        return url
    return f"{scheme}://{MASK}@{authority.rpartition('@')[2]}{rest[end:]}"


def url_secrets(url: str) -> list[str]:
    """The credentials inside a URL (userinfo and its parts, also percent-decoded)."""
    _, sep, rest = url.partition("://")
    if not sep:
        return []
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    userinfo, at, _ = rest[:end].rpartition("@")
    if not at:
        return []
    user, _, password = userinfo.partition(":")
    return [s for s in {userinfo, password, unquote(password), user, unquote(user)} if s]


def redact(text: str | None, secrets: Iterable[str]) -> str | None:
    """`text` with every secret replaced by ***: as written, as an exception quotes it
    (escaped, as in `b'Bearer ab\\ncd'`), and every piece of it between whitespace or control
    characters that is 4 characters or longer (a token split by a line break)."""
    if not text:
        return text
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        forms.add(secret)
        forms.add(repr(secret)[1:-1])
        forms.add(secret.encode("unicode_escape").decode("ascii"))
        forms.update(p for p in _SECRET_PIECES.split(secret) if len(p) >= 4)
    for form in sorted(forms, key=len, reverse=True):
        if form:
            text = text.replace(form, MASK)
    return text
