"""`kpp parse`, run as a user runs it: the console script in a subprocess."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube-proxy"
CAPTURE = FIXTURES / "v1.25.3-iptables.txt"  # has NaN and +Inf sample values
KPP = Path(sys.executable).with_name("kpp")


def kpp_parse(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(KPP), "parse", *args], input=stdin, capture_output=True,
                          timeout=60, check=False)


def reference(text: str) -> list[tuple]:
    """prometheus_client's samples (no counter in the captures lacks `_total`, so its names are
    the names as written)."""
    return [(s.name, s.labels, s.value, s.timestamp)
            for family in text_string_to_metric_families(text) for s in family.samples]


def _decode(value: float | str) -> float:
    assert isinstance(value, float) or value in ("NaN", "+Inf", "-Inf"), value
    return {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}.get(value, value)  # type: ignore[arg-type]


def test_fixture_one_json_object_per_sample() -> None:
    result = kpp_parse(str(CAPTURE))
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    lines = result.stdout.splitlines()
    expected = reference(CAPTURE.read_text(encoding="utf-8"))
    assert len(lines) == len(expected)
    for line, (name, labels, value, timestamp) in zip(lines, expected):
        record = orjson.loads(line)
        assert list(record) == ["name", "labels", "value", "timestamp_ms"]
        assert (record["name"], record["labels"], record["timestamp_ms"]) == (name, labels, timestamp)
        got = _decode(record["value"])
        assert (math.isnan(got) and math.isnan(value)) or got == value


def test_special_floats_are_strings() -> None:
    result = kpp_parse(str(CAPTURE))
    records = [orjson.loads(line) for line in result.stdout.splitlines()]
    expected = reference(CAPTURE.read_text(encoding="utf-8"))
    specials = [(r["value"], v) for r, (_n, _l, v, _t) in zip(records, expected)
                if isinstance(v, float) and not math.isfinite(v)]
    assert {"NaN", "+Inf"} <= {spelled for spelled, _ in specials}
    for spelled, value in specials:
        assert spelled == ("NaN" if math.isnan(value) else "+Inf" if value > 0 else "-Inf")
    assert b"NaN" not in result.stdout.replace(b'"NaN"', b"")
    assert b"null," not in result.stdout  # orjson's silent NaN -> null never happens


def test_timestamps_and_minus_inf_from_stdin() -> None:
    text = 'a{x="1"} -Inf 1700000000123\nb 2.5\n'
    result = kpp_parse("-", stdin=text.encode())
    assert result.returncode == 0, result.stderr
    records = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [(r["name"], r["value"], r["timestamp_ms"]) for r in records] == [
        ("a", "-Inf", 1700000000123), ("b", 2.5, None)]


def test_stdin_same_as_file_and_files_concatenate() -> None:
    from_file = kpp_parse(str(CAPTURE))
    from_stdin = kpp_parse("-", stdin=CAPTURE.read_bytes())
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_stdin.stdout == from_file.stdout
    other = FIXTURES / "v1.28.0-iptables.txt"
    both = kpp_parse(str(CAPTURE), str(other))
    assert both.returncode == 0
    assert both.stdout == from_file.stdout + kpp_parse(str(other)).stdout


def test_parse_error_names_file_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.txt"
    broken.write_text('# TYPE a gauge\na 1\nb{code:"200"} 1\nc 3\n', encoding="utf-8")
    result = kpp_parse(str(broken))
    assert result.returncode == 1
    assert result.stdout == b""
    message = result.stderr.decode()
    assert message.startswith(f"kpp parse: {broken}:3: ")
    assert "label name 'code'" in message
    assert "Traceback" not in message and message.count("\n") == 1


def test_error_in_second_file_after_first_is_printed(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("a 1\nb 2\n", encoding="utf-8")
    bad.write_text("c 1\nd NotANumber\n", encoding="utf-8")
    result = kpp_parse(str(good), str(bad))
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 2
    assert result.stderr.decode().startswith(f"kpp parse: {bad}:2: invalid value 'NotANumber'")


def test_stdin_error_is_reported_as_stdin() -> None:
    result = kpp_parse("-", stdin=b"a 1\n\nb 1 2 3\n")
    assert result.returncode == 1
    assert result.stderr.decode().startswith("kpp parse: <stdin>:3: ")


@pytest.mark.parametrize("make", ["missing", "directory", "not-utf8"])
def test_unreadable_input_is_a_clear_error(tmp_path: Path, make: str) -> None:
    path = tmp_path / "input.txt"
    if make == "directory":
        path.mkdir()
    elif make == "not-utf8":
        path.write_bytes(b"a 1\nb{x=\"\xff\"} 2\n")
    result = kpp_parse(str(path))
    assert result.returncode == 1
    message = result.stderr.decode()
    assert message.startswith("kpp parse: ") and str(path) in message
    assert "Traceback" not in message and message.count("\n") == 1
    if make == "not-utf8":
        assert f"{path}:2: not valid UTF-8" in message


def test_parse_starts_without_the_client_libraries() -> None:
    """`kpp parse` loads only its own module: the Kafka, Faust and HTTP clients the other
    subcommands import cost more start-up than parsing a scrape-sized file."""
    probe = ("import sys\nfrom kpp.cli import main\n"
             f"code = main(['parse', {str(CAPTURE)!r}])\nsys.stdout.flush()\n"
             "loaded = sorted(m for m in ('kafka', 'aiokafka', 'faust', 'httpx', 'streams', 'sinks')"
             " if m in sys.modules)\n"
             "print(code, ','.join(loaded) or '-', file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60, check=False)
    assert result.stderr.decode().strip() == "0 -"
    assert result.stdout == kpp_parse(str(CAPTURE)).stdout


def test_other_subcommands_still_listed_and_parse_options_unchanged() -> None:
    listed = subprocess.run([str(KPP), "--help"], capture_output=True, timeout=60, check=False)
    assert b"parse" in listed.stdout and b"stream" in listed.stdout and b"produce" in listed.stdout
    missing = subprocess.run([str(KPP), "--log-level", "ERROR", "parse"], capture_output=True,
                             timeout=60, check=False)
    assert missing.returncode == 2
    assert b"kpp parse: error: the following arguments are required: FILE" in missing.stderr
