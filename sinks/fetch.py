"""Faster record decoding for the sink's kafka-python consumer.

kafka-python decodes the records of a fetch in pure Python: seven varints, a DefaultRecord
and a ConsumerRecord per record, about 5 µs each; that was half of the sink's CPU time per
record. aiokafka (a dependency already, for the stream stage) ships the same decoding in C
(about 0.15 µs per record). `install(consumer)` makes one consumer's fetcher decode with it:

- only plain batches take the C path: message format v2, uncompressed. A fetch that holds
  anything else (a compressed batch, the legacy formats 0/1), or a consumer with
  deserializers or read_committed, is decoded by kafka-python's own code, unchanged;
- batch-level handling is kafka-python's: its batch objects check the CRC (check_crcs), give
  the leader epoch, and control batches are skipped as kafka-python skips them. The batch
  headers of a partition's fetch are read before its first record (to choose the decoder),
  so its batches are held at once: at most max_partition_fetch_bytes more memory;
- what is yielded is kafka-python's ConsumerRecord with the same fields, and the partition's
  position (`next_fetch_offset`) advances record by record as in kafka-python, so poll(),
  max_poll_records and seek behave the same (tests/sinks/test_fetch.py compares both
  decoders record by record).

It hooks into kafka-python internals (`Fetcher.PartitionRecords._unpack_records`), so
`install` checks they look as expected and otherwise leaves the consumer alone (it returns
False and the sink is merely slower); tests/sinks/test_fetch.py fails when the installed
kafka-python no longer takes the hook.
"""

from __future__ import annotations

import inspect
import logging

log = logging.getLogger("kpp.sink")

_EXPECTED_PARAMS = ["self", "tp", "records", "key_deserializer", "value_deserializer"]


def _fast_partition_records_class():  # noqa: ANN202
    """The PartitionRecords subclass, or None when kafka-python or aiokafka do not have what it
    relies on."""
    try:
        import kafka.errors as errors
        from aiokafka.record._crecords.default_records import DefaultRecordBatch as CRecordBatch
        from kafka.consumer.fetcher import ConsumerRecord, Fetcher
        from kafka.protocol.consumer import IsolationLevel
        from kafka.record.default_records import DefaultRecordBatch
    except ImportError as exc:
        log.info("fast record decoding unavailable (%s): kafka-python decodes", exc)
        return None
    base = getattr(Fetcher, "PartitionRecords", None)
    unpack = getattr(base, "_unpack_records", None)
    if (base is None or unpack is None or list(inspect.signature(unpack).parameters) != _EXPECTED_PARAMS
            or "_buffer" not in getattr(DefaultRecordBatch, "__slots__", ())):
        log.info("fast record decoding unavailable (kafka-python's fetcher changed): kafka-python decodes")
        return None

    header_size = DefaultRecordBatch.HEADER_STRUCT.size
    read_uncommitted = IsolationLevel.READ_UNCOMMITTED

    class _Replay:
        """Hands batches already taken from a MemoryRecords to kafka-python's own decoder, then
        the error that stopped taking them, if any (where kafka-python would have met it)."""

        def __init__(self, batches: list, error: Exception | None) -> None:
            self._batches = batches
            self._error = error
            self._next = 0

        def next_batch(self):  # noqa: ANN201
            if self._next >= len(self._batches):
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                return None
            batch = self._batches[self._next]
            self._batches[self._next] = None  # let decoded batches go
            self._next += 1
            return batch

    class FastPartitionRecords(base):
        def _unpack_records(self, tp, records, key_deserializer, value_deserializer):  # noqa: ANN001, ANN202
            # A generator like the original: it runs on the first take(), after the fetcher's
            # own checks of `records`. The batch headers are read first (no record yet) to
            # choose the decoder for the whole fetch.
            batches = []
            error = None
            plain = key_deserializer is None and value_deserializer is None \
                and self.isolation_level == read_uncommitted
            try:
                batch = records.next_batch()
                while batch is not None:
                    batches.append(batch)
                    if type(batch) is not DefaultRecordBatch or batch.magic != 2 or batch.compression_type != 0:
                        plain = False
                    batch = records.next_batch()
            except Exception as exc:  # noqa: BLE001 (kafka-python raises it after the batches before it)
                error, plain = exc, False
            if not plain:
                yield from base._unpack_records(self, tp, _Replay(batches, error), key_deserializer,
                                                value_deserializer)
                return
            topic, partition = tp.topic, tp.partition
            for batch in batches:
                if self.check_crcs and not batch.validate_crc():
                    raise errors.CorruptRecordError(
                        "Record batch for partition %s at offset %s failed crc check" % (tp, batch.base_offset))
                self.leader_epoch = epoch = batch.leader_epoch
                if batch.is_control_batch:
                    self.next_fetch_offset = batch.next_offset
                    continue
                try:
                    for record in CRecordBatch(batch._buffer):
                        offset, key, value, headers = record.offset, record.key, record.value, record.headers
                        self.records_read += 1
                        self.next_fetch_offset = offset + 1
                        yield ConsumerRecord(
                            topic, partition, epoch, offset, record.timestamp, record.timestamp_type, key, value,
                            headers, None, -1 if key is None else len(key), -1 if value is None else len(value),
                            sum(len(k.encode("utf-8")) + (len(v) if v is not None else 0) for k, v in headers)
                            if headers else -1)
                except Exception as exc:  # noqa: BLE001 (aiokafka's errors, as kafka-python's)
                    raise errors.CorruptRecordError(f"Found invalid record structure: {exc!r}") from None
                self.bytes_read += batch.size_in_bytes - header_size
            if batches:
                self.next_fetch_offset = batches[-1].next_offset
            self.drain()

    return FastPartitionRecords


_CLASS = None
_CHECKED = False


def fast_partition_records():  # noqa: ANN201
    global _CLASS, _CHECKED
    if not _CHECKED:
        _CLASS = _fast_partition_records_class()
        _CHECKED = True
    return _CLASS


def install(consumer) -> bool:  # noqa: ANN001
    """Make this consumer decode plain record batches in C; False when it cannot (then nothing
    changed)."""
    cls = fast_partition_records()
    fetcher = getattr(consumer, "_fetcher", None)
    if cls is None or fetcher is None or getattr(fetcher, "PartitionRecords", None) is not cls.__base__:
        return False
    fetcher.PartitionRecords = cls
    return True
