"""The on-disk spool: order, acknowledgement, recovery after a crash, the size bound."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from producers.spool import HEAD_FILE, Spool

REPO = Path(__file__).resolve().parents[2]


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def drain(spool: Spool, batch: int = 7) -> list[tuple[bytes, bytes]]:
    """Peek and ack everything, in batches, returning what was read."""
    out = []
    while entries := spool.peek(batch):
        out.extend((e.key, e.value) for e in entries)
        spool.ack(entries[-1])
    return out


def test_fifo_order_across_segment_rotation(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1000, max_bytes=1_000_000, fsync=False)
    records = [(f"node-{i % 3}".encode(), f"value-{i:04d}".encode() * 5) for i in range(200)]
    for key, value in records:
        spool.append(key, value)
    assert len(segments(tmp_path)) > 5
    assert spool.depth == 200
    # peek does not remove
    assert [(e.key, e.value) for e in spool.peek(3)] == records[:3]
    assert [(e.key, e.value) for e in spool.peek(3)] == records[:3]
    assert drain(spool) == records
    assert spool.depth == 0
    assert len(segments(tmp_path)) == 1, "fully acknowledged segments are deleted"
    spool.close()


def test_entries_carry_append_time_and_timestamp(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        before = time.time()
        spool.append(b"k", b"v", timestamp_ms=1_700_000_000_123)
        spool.append(b"k", b"")
        first, second = spool.peek(10)
    assert first.timestamp_ms == 1_700_000_000_123 and second.timestamp_ms is None
    assert before <= first.append_time <= time.time()
    assert second.value == b""


def test_ack_persists_across_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=500, max_bytes=100_000)
    for i in range(50):
        spool.append(b"k", f"{i}".encode() * 20)
    entries = spool.peek(30)
    spool.ack(entries[29])
    spool.ack(entries[10])  # acking behind the head changes nothing
    assert spool.depth == 20
    spool.close()

    reopened = Spool(tmp_path, segment_bytes=500, max_bytes=100_000)
    assert reopened.depth == 20
    assert [e.value for e in reopened.peek(100)] == [f"{i}".encode() * 20 for i in range(30, 50)]
    reopened.append(b"k", b"after")
    assert reopened.depth == 21
    assert drain(reopened)[-1] == (b"k", b"after")
    reopened.close()
    assert Spool(tmp_path, segment_bytes=500, max_bytes=100_000).depth == 0


def test_torn_tail_is_truncated_and_earlier_records_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path)
    for i in range(10):
        spool.append(b"node-a", f"scrape-{i}".encode() * 10)
    spool.close()
    last = segments(tmp_path)[-1]
    size = last.stat().st_size
    os.truncate(last, size - 7)  # a record half written when the process died

    with caplog.at_level(logging.WARNING, logger="producers.spool"):
        spool = Spool(tmp_path)
    assert [e.value for e in spool.peek(100)] == [f"scrape-{i}".encode() * 10 for i in range(9)]
    assert any("cut" in r.getMessage() and "bytes" in r.getMessage() for r in caplog.records)
    spool.append(b"node-a", b"next")  # appends follow the last intact record
    spool.close()
    assert [e.value for e in Spool(tmp_path).peek(100)][-2:] == [b"scrape-8" * 10, b"next"]


def test_corrupt_last_record_is_truncated(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(5):
        spool.append(b"k", f"v{i}".encode() * 10)
    spool.close()
    last = segments(tmp_path)[-1]
    data = bytearray(last.read_bytes())
    data[-3] ^= 0xFF  # a flipped byte: the CRC of the last record no longer matches
    last.write_bytes(bytes(data))
    assert [e.value for e in Spool(tmp_path).peek(10)] == [f"v{i}".encode() * 10 for i in range(4)]


def test_cap_drops_oldest_segments_and_counts_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path, segment_bytes=1000, max_bytes=4000, fsync=False)
    value = b"x" * 70  # ~100 bytes a record with framing and key
    with caplog.at_level(logging.WARNING, logger="producers.spool"):
        for i in range(200):
            spool.append(b"k", value + f"{i:03d}".encode())
    assert spool.size_bytes <= 4000
    assert spool.dropped_records > 0
    remaining = [e.value[-3:] for e in spool.peek(1000)]
    assert spool.depth == len(remaining) == 200 - spool.dropped_records
    # the newest records survive, in order, without a gap
    assert [int(v) for v in remaining] == list(range(200 - len(remaining), 200))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "spool full (3.9 KiB): dropped" in warnings[0] and "oldest scrapes" in warnings[0]
    dropped = spool.dropped_records
    spool.close()
    assert Spool(tmp_path, segment_bytes=1000, max_bytes=4000).dropped_records == dropped, "persisted"


def test_cap_counts_only_unacked_records(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1000, max_bytes=3000, fsync=False)
    for i in range(25):
        spool.append(b"k", b"y" * 70)
    entries = spool.peek(15)
    spool.ack(entries[-1])
    before = spool.depth
    for i in range(20):
        spool.append(b"k", b"z" * 70)
    assert spool.depth + spool.dropped_records == before + 20
    # acking an entry whose segment was dropped meanwhile is harmless
    spool.ack(entries[-1])
    assert spool.depth + spool.dropped_records == before + 20


def test_record_larger_than_the_spool_is_refused(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=1000, max_bytes=2000) as spool:
        with pytest.raises(ValueError):
            spool.append(b"k", b"x" * 5000)
        spool.append(b"k", b"x" * 900)  # bigger than a segment is fine: it gets its own
        assert spool.depth == 1


def test_concurrent_appender_and_sender(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=2000, max_bytes=10_000_000, fsync=False)
    total = 2000
    received: list[bytes] = []

    def appender() -> None:
        for i in range(total):
            spool.append(b"k", f"{i:05d}".encode())

    thread = threading.Thread(target=appender)
    thread.start()
    deadline = time.monotonic() + 30
    while len(received) < total and time.monotonic() < deadline:
        entries = spool.peek(50)
        received.extend(e.value for e in entries)
        if entries:
            spool.ack(entries[-1])
    thread.join()
    assert received == [f"{i:05d}".encode() for i in range(total)]
    assert spool.depth == 0


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from producers.spool import Spool
    spool = Spool(Path(sys.argv[1]), segment_bytes=64 * 1024, max_bytes=64 * 1024 * 1024)
    i = 0
    while True:
        spool.append(b"node-%d" % (i % 5), (b"%08d:" % i) + b"v" * (i % 3000))
        print(i, flush=True)  # printed only after append() returned
        i += 1
""")


def test_sigkill_mid_append_loses_nothing_acknowledged(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(spool_dir)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    last_returned = -1
    deadline = time.monotonic() + 30
    while last_returned < 300 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        last_returned = int(line)
    proc.send_signal(signal.SIGKILL)  # mid-way: the child keeps appending until here
    proc.wait()
    for line in proc.stdout:  # what it printed before it died also returned
        last_returned = int(line)
    assert last_returned >= 300, "the child did not get going"

    spool = Spool(spool_dir, segment_bytes=64 * 1024, max_bytes=64 * 1024 * 1024)
    values = [e.value for e in spool.peek(1_000_000)]
    assert len(values) >= last_returned + 1
    for i, value in enumerate(values):  # in order, intact, no gap
        assert value == (b"%08d:" % i) + b"v" * (i % 3000)
    assert spool.depth == len(values)
    spool.close()


def test_head_file_is_replaced_atomically(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append(b"k", b"v")
        spool.ack(spool.peek(1)[0])
    assert (tmp_path / HEAD_FILE).is_file()
    assert not list(tmp_path.glob(HEAD_FILE + ".tmp*"))
