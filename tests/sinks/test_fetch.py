"""The sink's record decoding (sinks/fetch.py) against kafka-python's own: the same
ConsumerRecords, positions, counts and errors, take by take, for plain batches (the C path)
and for everything it leaves to kafka-python (compressed, legacy format, mixed fetches)."""

from __future__ import annotations

import struct

import pytest
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.protocol.consumer import IsolationLevel
from kafka.record import MemoryRecords
from kafka.record.memory_records import MemoryRecordsBuilder
from kafka.record.util import calc_crc32c
from kafka.structs import TopicPartition

from sinks import fetch

TP = TopicPartition("t", 3)
FAST = fetch.fast_partition_records()
STOCK = Fetcher.PartitionRecords


def batch(offset: int, records: list[tuple], *, magic: int = 2, compression: int = 0) -> bytes:
    builder = MemoryRecordsBuilder(magic, compression, batch_size=1 << 24, offset=offset)
    for timestamp, key, value, headers in records:
        assert builder.append(timestamp, key, value, headers if magic == 2 else None) is not None
    builder.close()
    data = bytes(builder.buffer())
    assert MemoryRecords(data).next_batch().compression_type == compression  # (small ones go uncompressed)
    return data


def as_control(data: bytes) -> bytes:
    """The same v2 batch with the control bit set (and its CRC made right again)."""
    buf = bytearray(data)
    attributes, = struct.unpack_from(">h", buf, 21)
    struct.pack_into(">h", buf, 21, attributes | 0x20)
    struct.pack_into(">I", buf, 17, calc_crc32c(bytes(buf[21:])))
    return bytes(buf)


def plain(offset: int, count: int, salt: str = "") -> bytes:
    records = []
    for i in range(count):
        key = None if i % 5 == 0 else f"node-{i}{salt}".encode()
        value = None if i % 7 == 3 else (b"" if i % 7 == 4 else f'{{"v":{i},"s":"{salt}ü"}}'.encode() * (i % 3 + 1))
        headers = [] if i % 4 else [("h", b"x"), ("ünï", None), ("e", b"")]
        records.append((1_700_000_000_000 + i, key, value, headers))
    return batch(offset, records)


def drain(cls, data: bytes, fetch_offset: int, chunk: int, **kwargs) -> list:  # noqa: ANN001
    """[(records of each take, next_fetch_offset after it), ...] and the final state. Not
    `bytes_read` (a fetch metric): kafka-python counts each record without its length prefix,
    the C path counts whole batches less their headers."""
    drained = []
    part = cls(fetch_offset, TP, MemoryRecords(data), **kwargs)
    out = []
    while part:
        try:
            records = part.take(chunk)
        except Exception as exc:  # noqa: BLE001 (compared as type and text)
            out.append(("raised", type(exc).__name__, str(exc)))
            break
        out.append((records, part.next_fetch_offset))
        if not records:
            break
    drained.append((part.records_read, part.leader_epoch, bool(part)))
    return out + drained


def same(data: bytes, fetch_offset: int = 0, chunk: int = 3, **kwargs) -> list:  # noqa: ANN003
    fast = drain(FAST, data, fetch_offset, chunk, **kwargs)
    stock = drain(STOCK, data, fetch_offset, chunk, **kwargs)
    assert fast == stock
    return fast


def records_of(result: list) -> list:
    return [r for step in result[:-1] if step[0] != "raised" for r in step[0]]


def test_the_installed_kafka_python_takes_the_hook() -> None:
    """Fails when an upgrade of kafka-python (or aiokafka without its C extension) leaves the
    sink on the slow decoder: look at sinks/fetch.py."""
    assert FAST is not None and FAST.__base__ is STOCK

    class Consumer:
        _fetcher = Fetcher.__new__(Fetcher)

    consumer = Consumer()
    consumer._fetcher.PartitionRecords = STOCK
    assert fetch.install(consumer) and consumer._fetcher.PartitionRecords is FAST


@pytest.mark.parametrize("chunk", [1, 3, 500])
def test_plain_batches_decode_as_kafka_python_decodes_them(chunk: int) -> None:
    data = plain(0, 40) + plain(40, 1) + plain(41, 25, "b")
    result = same(data, chunk=chunk)
    got = records_of(result)
    assert [r.offset for r in got] == list(range(66))
    assert got[1].key == b"node-1" and got[0].key is None and got[3].value is None and got[4].value == b""
    assert got[0].headers == [("h", b"x"), ("ünï", None), ("e", b"")]
    part = FAST(0, TP, MemoryRecords(data))
    part.take(1000)
    assert part.bytes_read == len(data) - 3 * 61  # the records of three batches, headers excepted


def test_a_fetch_offset_inside_a_batch_skips_the_records_before_it() -> None:
    got = records_of(same(plain(100, 30) + plain(130, 10), fetch_offset=117, chunk=4))
    assert [r.offset for r in got] == list(range(117, 140))


def test_control_batches_are_skipped_as_kafka_python_skips_them() -> None:
    control = as_control(batch(20, [(1, b"\x00\x00\x00\x01", b"\x00\x00\x00\x00\x00\x00", [])]))
    got = records_of(same(plain(0, 20) + control + plain(21, 5)))
    assert [r.offset for r in got] == list(range(20)) + list(range(21, 26))
    result = same(plain(0, 5) + control)
    assert result[-2][1] == 21  # the position moves past a trailing control batch


def test_compressed_and_mixed_fetches_are_left_to_kafka_python() -> None:
    squeezed = batch(10, [(5, b"k", b"v" * 500, [("h", b"1")]), (6, None, b"w" * 500, [])], compression=1)  # gzip
    got = records_of(same(plain(0, 10) + squeezed + plain(12, 3)))
    assert [r.offset for r in got] == list(range(15))


def test_legacy_message_format_is_left_to_kafka_python() -> None:
    legacy = batch(0, [(1, b"k", b"v", None), (2, None, b"w", None)], magic=1)
    assert [r.offset for r in records_of(same(legacy + plain(2, 3)))] == [0, 1, 2, 3, 4]


def test_a_truncated_last_batch_is_left_for_the_next_fetch() -> None:
    data = plain(0, 8) + plain(8, 8)
    result = same(data[:-10])
    assert [r.offset for r in records_of(result)] == list(range(8))


def test_a_corrupt_batch_raises_the_same_error() -> None:
    good = plain(0, 6)
    bad = bytearray(plain(6, 6))
    bad[-3] ^= 0xFF
    result = same(good + bytes(bad), chunk=4)
    assert result[-2][0] == "raised" and result[-2][1] == CorruptRecordError.__name__
    assert [r.offset for r in records_of(result)] == list(range(6))


def test_unchecked_crcs_and_read_committed_and_deserializers_follow_kafka_python() -> None:
    data = plain(0, 12)
    same(data, check_crcs=False)
    same(data, isolation_level=IsolationLevel.READ_COMMITTED)

    class Upper:
        def deserialize(self, topic, headers, data):  # noqa: ANN001, ANN201
            return None if data is None else data.upper()

    got = records_of(same(data, value_deserializer=Upper()))
    assert got[1].value == got[1].value.upper()


def test_plain_fetches_take_the_c_path_and_others_kafka_pythons(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    stock_unpack = STOCK._unpack_records
    monkeypatch.setattr(STOCK, "_unpack_records", lambda self, *args: calls.append(1) or stock_unpack(self, *args))
    FAST(0, TP, MemoryRecords(plain(0, 5) + plain(5, 5))).take(100)
    assert calls == []
    FAST(0, TP, MemoryRecords(plain(0, 5) + batch(5, [(1, b"k", b"v" * 500, [])], compression=1))).take(100)
    assert calls == [1]
