"""Header values from files and the environment, token files, and redaction of every secret
of a scrape request (header values, tokens, URL credentials) from any text we show."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from contracts.errors import ConfigError
from producers.secrets import (SecretError, SecretFile, parse_header_specs, redact, redact_url,
                               secret_literals_on_command_line, url_secrets)


@pytest.mark.parametrize("url, shown", [
    ("http://user:pa55@host:10249/metrics", "http://***@host:10249/metrics"),
    ("https://tok%40en@10.0.0.1/metrics?x=a@b", "https://***@10.0.0.1/metrics?x=a@b"),
    ("http://user@host/metrics", "http://***@host/metrics"),
    ("http://a:b@c@host/m", "http://***@host/m"),
    ("http://127.0.0.1:10249/metrics", "http://127.0.0.1:10249/metrics"),
    ("http://host/path/with@sign", "http://host/path/with@sign"),
])
def test_url_credentials_are_redacted(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    for secret in url_secrets(url):
        assert secret not in shown.replace("***", "")


def test_url_secrets_include_decoded_password() -> None:
    assert set(url_secrets("http://kpp:p%40ss@h/m")) >= {"kpp:p%40ss", "p%40ss", "p@ss", "kpp"}
    assert url_secrets("http://h/m") == []


def test_redact_hides_a_token_however_an_exception_quotes_it() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.part-one\npart-two"
    # how h11 words an illegal header value, and how the token may be split across lines
    text = f"LocalProtocolError: Illegal header value {('Bearer ' + token).encode()!r} / {token}"
    shown = redact(text, [token])
    assert "eyJhbGci" not in shown and "part-one" not in shown and "part-two" not in shown
    assert shown.startswith("LocalProtocolError: Illegal header value")
    assert redact(None, [token]) is None and redact("no secret here", ["", "abcd"]) == "no secret here"


def test_header_specs_literal_file_and_environment(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("Bearer abc\n")
    specs = parse_header_specs(["X-A=b", f"Authorization=@{token}", "X-Scope-OrgID=env:TENANT"],
                               env={"TENANT": "team-7"})
    assert specs.literal == {"X-A": "b", "X-Scope-OrgID": "team-7"}
    assert specs.files == {"Authorization": str(token)}
    assert SecretFile(specs.files["Authorization"], "header Authorization").current() == "Bearer abc"


@pytest.mark.parametrize("pair, message", [
    ("NoValue", "is not NAME=VALUE"),
    ("Bad Name=secret-value", "not a valid header name"),
    ("Authorization=@/does/not/exist", "does not exist"),
    ("Authorization=env:UNSET_VAR_FOR_TEST", "'UNSET_VAR_FOR_TEST' is not set"),
    ("X-A=env:BROKEN", "line break or control character"),
])
def test_header_spec_errors_never_show_the_value(pair: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_header_specs([pair], env={"BROKEN": "secret-value\nmore"})
    assert "secret-value" not in str(caught.value)


def test_secret_literals_on_the_command_line_are_named() -> None:
    assert secret_literals_on_command_line(["Authorization=Bearer x", "authorization=@/f", "X-A=b",
                                            "Cookie=env:C"]) == ["Authorization"]
    assert secret_literals_on_command_line(None) == []


def test_secret_file_strips_the_trailing_newline_and_follows_rotation(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first-token\n")
    secret = SecretFile(str(path), "bearer token")
    assert secret.current() == "first-token"
    path.write_text("second-token-longer\r\n")
    os.utime(path, (1, 1))  # a different stamp even within the file system's time resolution
    assert secret.current() == "second-token-longer"


@pytest.mark.parametrize("content, message", [
    ("part-one-SECRET\npart-two-SECRET\n", r"line break or control character inside the value \(line 1\)"),
    ("\n", "is empty"),
])
def test_secret_file_errors_never_show_the_value(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "token"
    path.write_text(content)
    with pytest.raises(SecretError, match=message) as caught:
        SecretFile(str(path), "bearer token").current()
    assert "SECRET" not in str(caught.value) and str(path) in str(caught.value)
    with pytest.raises(SecretError, match="cannot read bearer token file"):
        SecretFile(str(tmp_path / "missing"), "bearer token").current()
