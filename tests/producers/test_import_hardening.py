"""`kpp import` against hostile or damaged input: an index may only name files inside its
archive, lines are capped and read in bounded memory, a damaged gzip file is a clear error
naming the file."""

from __future__ import annotations

import gzip
import io
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from contracts.errors import ConfigError
from runtime.terminal import excerpt, printable
from producers.archive import archive_line, line_problem
from kpp.cli import build_parser
from producers.importer import (DEFAULT_MAX_LINE_BYTES, Identity, ImportStats, LineTooLong, RefusedEntry, archive_member,
                                archive_messages, bounded_lines, export_records, file_lines, index_files, plan,
                                text_records)
from tests.conftest import REPO
from tests.streams.harness import unique_prefix
from tests.streams.replay_helpers import read_all

SECRET = "s3cret-token-do-not-print"


def write_archive_file(path: Path, lines: int) -> None:
    with gzip.open(path, "wb") as fh:
        for offset in range(lines):
            value = json.dumps({"scrape_ts_ms": 1_700_000_000_000 + offset, "pad": "x" * 200}).encode()
            fh.write(archive_line(0, offset, 1_700_000_000_000 + offset, b"node-1", value)[0])


def write_index(root: Path, names: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    index = root / "index.json"
    index.write_text(json.dumps({"format": "kpp-archive/v1", "files": [{"file": n} for n in names]}))
    return index


# -- containment ----------------------------------------------------------------------------

@pytest.fixture
def archive_with_outside(tmp_path: Path) -> tuple[Path, Path]:
    """An archive directory holding one good file, and a secret file beside (outside) it."""
    root = tmp_path / "archive"
    (root / "2026-01-02" / "15").mkdir(parents=True)
    write_archive_file(root / "2026-01-02" / "15" / "good.jsonl.gz", 3)
    secret = tmp_path / "secret.txt"
    secret.write_text(f"{SECRET} 1\n")
    return root, secret


def test_index_entries_must_stay_inside_the_archive(archive_with_outside) -> None:
    root, secret = archive_with_outside
    (root / "link-out.jsonl.gz").symlink_to(secret)
    (root / "dir-out").symlink_to(secret.parent)
    (root / "link-in.jsonl.gz").symlink_to(root / "2026-01-02" / "15" / "good.jsonl.gz")
    os.mkfifo(root / "fifo.jsonl.gz")
    refused = {
        str(secret): "an absolute path",
        "../secret.txt": "a path with '..'",
        "2026-01-02/../../secret.txt": "a path with '..'",
        "link-out.jsonl.gz": "a symbolic link out of the archive",
        "dir-out/secret.txt": "a symbolic link out of the archive",
        "missing.jsonl.gz": "missing",
        "fifo.jsonl.gz": "not a regular file",
        "": "not a file name",
    }
    for name, why in refused.items():
        with pytest.raises(RefusedEntry, match=why):
            archive_member(root, name)
    with pytest.raises(RefusedEntry, match="not a file name"):
        archive_member(root, 7)
    good = root / "2026-01-02" / "15" / "good.jsonl.gz"
    assert archive_member(root, "2026-01-02/15/good.jsonl.gz") == good.resolve()
    assert archive_member(root, "link-in.jsonl.gz") == good.resolve()  # a link inside is fine


def test_one_refused_entry_refuses_the_whole_index_and_nothing_is_read(archive_with_outside) -> None:
    root, secret = archive_with_outside
    outside_fifo = secret.parent / "fifo"
    os.mkfifo(outside_fifo)  # opening it would block: the refusal must come from names and links alone
    (root / "fifo-link").symlink_to(outside_fifo)
    index = write_index(root, ["2026-01-02/15/good.jsonl.gz", str(secret), "../secret.txt", "fifo-link"])
    with pytest.raises(ConfigError) as caught:
        index_files(index)
    message = str(caught.value)
    assert "3 of 4 entries refused, nothing imported" in message
    assert "(an absolute path)" in message and "'../secret.txt' (a path with '..')" in message
    assert "'fifo-link' (a symbolic link out of the archive)" in message
    assert SECRET not in message


def test_a_named_input_must_be_a_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")  # finding its kind would consume its first line
    with pytest.raises(ConfigError, match="pipe is not a regular file"):
        plan([str(tmp_path / "pipe")], DEFAULT_MAX_LINE_BYTES)


def test_a_broken_index_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(ConfigError, match="index.json: not valid JSON"):
        index_files(tmp_path / "index.json")
    (tmp_path / "index.json").write_text('{"files": {"file": "x"}}')
    with pytest.raises(ConfigError, match="not a kpp archive index"):
        index_files(tmp_path / "index.json")


# -- bounded lines --------------------------------------------------------------------------

class EndlessLine(io.RawIOBase):
    """A raw stream of one endless line of `a`, counting the bytes it served."""

    def __init__(self) -> None:
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001
        buffer[:] = b"a" * len(buffer)
        self.served += len(buffer)
        return len(buffer)


def test_bounded_lines_splits_at_newlines_and_caps_lines() -> None:
    data = b"abc\n\n" + b"x" * 10 + b"\nlast"
    assert list(bounded_lines(io.BytesIO(data), 10)) == [b"abc\n", b"\n", b"x" * 10 + b"\n", b"last"]
    assert list(bounded_lines(io.BytesIO(b"x" * 10), 10)) == [b"x" * 10]  # exactly the cap, no newline
    for too_long in (b"ok\n" + b"x" * 11 + b"\n", b"ok\n" + b"x" * 11):
        lines = bounded_lines(io.BytesIO(too_long), 10)
        assert next(lines) == b"ok\n"
        with pytest.raises(LineTooLong) as caught:
            next(lines)
        assert caught.value.line_number == 2


def test_bounded_lines_never_reads_much_past_the_cap() -> None:
    raw = EndlessLine()
    with pytest.raises(LineTooLong):
        next(bounded_lines(io.BufferedReader(raw, buffer_size=8192), 1 << 20))
    assert raw.served <= (1 << 20) + 2 * 8192


@pytest.fixture(scope="module")
def gib_line_gzip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 1 MB of gzip holding one line of 1 GiB of `a`, written in chunks."""
    path = tmp_path_factory.mktemp("big") / "one-line.jsonl.gz"
    chunk = b"a" * (1 << 20)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(b'{"partition": 0, "offset": 0, "')
        for _ in range(1024):
            gz.write(chunk)
        gz.write(b'": 1}\n')
    assert path.stat().st_size < 2 << 20
    return path


def test_a_gib_line_in_a_small_gzip_fails_fast_naming_file_and_line(gib_line_gzip: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        list(file_lines(gib_line_gzip, 4 << 20))
    assert f"{gib_line_gzip}:1: line longer than {4 << 20} bytes" in str(caught.value)
    assert time.monotonic() - started < 5


def test_the_line_cap_is_an_option() -> None:
    assert build_parser().parse_args(["import", "f"]).max_line_bytes == DEFAULT_MAX_LINE_BYTES == 16 << 20
    assert build_parser().parse_args(["import", "f", "--max-line-bytes", "4MiB"]).max_line_bytes == 4 << 20


def truncated_gzip(tmp_path: Path) -> Path:
    good = tmp_path / "whole.jsonl.gz"
    write_archive_file(good, 2000)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])
    return cut


def test_truncated_and_corrupt_gzip_are_errors_naming_the_file(tmp_path: Path) -> None:
    cut = truncated_gzip(tmp_path)
    with pytest.raises(ConfigError, match=rf"{cut}: truncated gzip: .* after line \d+$"):
        list(file_lines(cut, 1 << 20))
    data = bytearray((tmp_path / "whole.jsonl.gz").read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64
    corrupt = tmp_path / "corrupt.jsonl.gz"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=rf"{corrupt}: corrupt gzip after line \d+: "):
        list(file_lines(corrupt, 1 << 20))
    crc = bytearray((tmp_path / "whole.jsonl.gz").read_bytes())
    crc[-8] ^= 0xFF  # the stored CRC-32: every line reads, the end does not check
    (tmp_path / "crc.jsonl.gz").write_bytes(bytes(crc))
    with pytest.raises(ConfigError, match=r"crc.jsonl.gz: corrupt gzip after line 2000: CRC check failed"):
        list(file_lines(tmp_path / "crc.jsonl.gz", 1 << 20))


def test_a_damaged_archive_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    lines = [archive_line(0, 0, 1, b"n", b"{}")[0], b'{"partition": 0, "offset": 1, "timestamp_ms": "soon"}\n']
    path.write_bytes(gzip.compress(b"".join(lines)))
    with pytest.raises(ConfigError, match=rf"{path}:2: not a kpp archive line: timestamp_ms is not an integer"):
        list(archive_messages([path], ImportStats()))
    assert line_problem({"partition": 0, "offset": 1, "timestamp_ms": 2, "key": 5}) == "key is neither a string nor null"
    assert line_problem({"partition": 0, "offset": 1, "timestamp_ms": 2, "value_base64": "@@"}) == \
        "value_base64 is not base64"
    assert line_problem({"partition": 0, "offset": 1, "timestamp_ms": 2, "key": "n", "value": {}}) is None


def test_export_lines_of_the_wrong_shape_name_file_and_line() -> None:
    good = b'{"metric": {"__name__": "kubeproxy_sync_proxy_rules_last_timestamp_seconds", "node": "n"}, ' \
           b'"values": [1], "timestamps": [1000]}\n'
    assert len(export_records([(1, good)], "e.jsonl", Identity())) == 1
    for bad, reason in ((b'{"metric": {}, "values": 1, "timestamps": [1]}', "values and timestamps are not"),
                        (b'{"metric": {}, "values": [1, 2], "timestamps": [1]}', "values and timestamps are not"),
                        (b'{"metric": {}, "values": [1], "timestamps": ["x"]}', "a timestamp that is not an integer"),
                        (b'{"metric": {"node": 3}, "values": [], "timestamps": []}', "metric is not an object of string labels"),
                        (good.replace(b"[1]", b'["one"]'), "a value that is not a number")):
        with pytest.raises(ConfigError, match=f"e.jsonl:2: {reason}"):
            export_records([(1, b"\n"), (2, bad)], "e.jsonl", Identity())


def test_parse_errors_quote_only_a_short_escaped_excerpt() -> None:
    line = "kubeproxy_x{a=\"b\"} 1 \x1b]0;pwned\x07" + "y" * 5000 + "\n"
    with pytest.raises(ConfigError) as caught:
        text_records(line.encode(), "dump.prom", Identity(node="n"))
    message = str(caught.value)
    assert message.startswith("dump.prom:1: ") and "\x1b" not in message and "\x07" not in message
    assert "\\x1b]0;pwned\\x07" in message and len(message) < 300


def test_printable_and_excerpt() -> None:
    assert printable("node-1 ok") == "node-1 ok"
    assert printable("a\x1b[31m\r\n\t\x7f\x85\u202e\U000e0001b") == \
        "a\\x1b[31m\\r\\n\\t\\x7f\\x85\\u202e\\U000e0001b"
    assert excerpt(b"\xff\x1bok", 10) == "\\xff\\x1bok"
    assert excerpt(b"z" * 1000, 5) == "zzzzz…" and excerpt("short") == "short"


# -- the command -------------------------------------------------------------------------------

def run_import(kafka, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, int]:
    """`kpp import` as a child process, and its peak RSS in bytes. Its address space is capped
    at 2 GiB, so that a reader materialising a huge line fails there instead of taking the
    machine's memory."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    command = [sys.executable, str(REPO / "tests" / "peak_rss.py"), "kpp", "import", *args,
               "--kafka-bootstrap", kafka.bootstrap]
    peak_file = tmp_path / "peak-rss"
    with open(tmp_path / "stdout", "w+b") as out, open(tmp_path / "stderr", "w+b") as err:
        proc = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                preexec_fn=cap, env={**os.environ, "PEAK_RSS_FILE": str(peak_file)})
        watchdog = threading.Timer(120, proc.kill)
        watchdog.start()
        try:
            proc.wait()
        finally:
            watchdog.cancel()
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(command, proc.returncode, out.read().decode(), err.read().decode())
    # the command's own peak (tests/peak_rss.py): wait4's ru_maxrss would count pytest's memory
    assert peak_file.exists(), f"the import wrote no peak RSS (killed?): {result.stderr[-2000:]}"
    return result, int(peak_file.read_text())


@pytest.mark.integration
def test_import_refuses_an_index_leading_out_of_the_archive(kafka, archive_with_outside, tmp_path) -> None:
    root, secret = archive_with_outside
    (root / "link.jsonl.gz").symlink_to(secret)
    write_index(root, ["2026-01-02/15/good.jsonl.gz", str(secret), "../secret.txt", "link.jsonl.gz"])
    result, _rss = run_import(kafka, tmp_path, str(root), "--topic-prefix", unique_prefix())
    assert result.returncode == 2, result.stderr
    assert "3 of 4 entries refused, nothing imported" in result.stderr
    assert SECRET not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_import_of_a_gib_line_fails_fast_in_bounded_memory(kafka, gib_line_gzip, tmp_path) -> None:
    started = time.monotonic()
    result, rss = run_import(kafka, tmp_path, str(gib_line_gzip), "--topic-prefix", unique_prefix())
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert f"{gib_line_gzip}:1: line longer than {DEFAULT_MAX_LINE_BYTES} bytes" in result.stderr
    assert "internal error" not in result.stderr
    assert rss < 300 << 20, f"peak RSS {rss >> 20} MiB"
    assert elapsed < 30
    print(f"1 GiB line in {gib_line_gzip.stat().st_size >> 10} KiB of gzip: refused in {elapsed:.1f} s, "
          f"peak RSS {rss >> 20} MiB")


@pytest.mark.integration
def test_import_of_a_truncated_gzip_names_the_file_and_counts_what_was_published(kafka, tmp_path) -> None:
    cut = truncated_gzip(tmp_path)
    prefix = unique_prefix()
    result, _rss = run_import(kafka, tmp_path, str(cut), "--topic-prefix", prefix)
    assert result.returncode == 2, result.stderr
    assert "internal error" not in result.stderr
    line = next(x for x in result.stderr.splitlines() if "error:" in x)
    published = int(line.split("after publishing ")[1].split(" ")[0])
    read = int(line.split("after line ")[1].split(";")[0])
    assert f"{cut}: truncated gzip" in line and published == read > 0, line
    assert len(read_all(kafka, [f"{prefix}.samples"])) == published
