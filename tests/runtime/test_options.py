from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from contracts.errors import ConfigError
from runtime.options import Option, add_to, byte_size, load_toml, positive_float, resolve

OPTIONS = (
    Option("interval", "seconds", 15.0, "T_INTERVAL", kind=positive_float),
    Option("target", "urls", ["http://default"], "T_TARGETS", repeated=True),
    Option("max_body", "size", "16MiB", "T_MAX", kind=byte_size),
    Option("insecure", "flag", False, "T_INSECURE", flag_only=True),
)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_to(parser, OPTIONS)
    return parser.parse_args(argv)


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('interval = 5\ntarget = "http://file"\nmax_body = "1KiB"\ninsecure = true\n')
    file_values = load_toml(str(config))
    assert resolve(OPTIONS, parse([]), {}, env={}) == {
        "interval": 15.0, "target": ["http://default"], "max_body": 16 * 1024 * 1024, "insecure": False}
    assert resolve(OPTIONS, parse([]), file_values, env={}) == {
        "interval": 5.0, "target": ["http://file"], "max_body": 1024, "insecure": True}
    env = {"T_INTERVAL": "7", "T_TARGETS": "http://a, http://b", "T_INSECURE": "no"}
    from_env = resolve(OPTIONS, parse([]), file_values, env=env)
    assert from_env["interval"] == 7.0 and from_env["target"] == ["http://a", "http://b"]
    assert from_env["insecure"] is False and from_env["max_body"] == 1024
    from_flags = resolve(OPTIONS, parse(["--interval", "2", "--target", "http://x", "--target", "http://y"]),
                         file_values, env=env)
    assert from_flags["interval"] == 2.0 and from_flags["target"] == ["http://x", "http://y"]


@pytest.mark.parametrize("text, expected", [("16MiB", 16 * 2**20), ("500KB", 500_000), ("1048576", 2**20),
                                            ("1GiB", 2**30), ("2M", 2_000_000)])
def test_byte_size(text: str, expected: int) -> None:
    assert byte_size(text) == expected


@pytest.mark.parametrize(
    "env, file_values, message",
    [
        ({"T_INTERVAL": "-1"}, {}, "environment variable T_INTERVAL: '-1' is not valid: must be a positive"),
        ({}, {"max_body": "lots"}, "config file setting 'max_body': 'lots' is not valid"),
        ({"T_INSECURE": "maybe"}, {}, "is not a boolean"),
        ({}, {"intervall": 3}, "unknown setting(s) in the config file: intervall"),
    ],
)
def test_errors_name_the_source(env, file_values, message) -> None:
    with pytest.raises(ConfigError) as err:
        resolve(OPTIONS, parse([]), file_values, env=env)
    assert message in str(err.value)


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("interval = = 3\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_toml(str(bad))
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_toml(str(tmp_path / "missing.toml"))
