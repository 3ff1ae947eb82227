"""A bounded, crash-safe, on-disk FIFO of (key, value) records: the write-ahead path of every
scrape. The scraper appends; the sender peeks from the head, sends, and acknowledges once Kafka
has acknowledged, so a record leaves the spool only after Kafka has it.

Layout of the spool folder:

    00000000000000000007.seg   segments, named by a zero-padded sequence number; only the
    00000000000000000008.seg   newest one (the "active" segment) is appended to
    head.json                  {"segment": 7, "offset": 4096, "dropped": 0}: the first
                               unacknowledged record, and the records dropped since creation

A record is framed as

    length u32 | crc32 u32 | append_time f64 | timestamp_ms i64 (-1: none) | key_len u32 | key | value

(big-endian; `length` counts the bytes after the CRC, the CRC covers them). `append_time` is
the wall-clock time of `append()`, so the publish latency survives a restart.

Crash safety: a record is written with one write() (and fsync'd when `fsync=True`) before
`append()` returns; the head file is replaced atomically (temp file, fsync, rename, fsync of the
folder). On open, a torn record at the end of a segment (kill -9 or power loss mid-write) is cut
off and the number of bytes cut is logged. A crash between sending and acknowledging means the
records are sent again after the restart: duplicates are possible across a crash, losses are not.

Bound: when an append would take the spool past `max_bytes`, the OLDEST whole segments are
deleted, acknowledged or not; the records lost that way are counted in `dropped_records`
(persisted) and logged as a WARNING. Fully acknowledged segments are deleted as the head passes
them.

Thread safety: every method takes one lock; meant for one appending and one sending thread.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MiB = 1024 * 1024
SEGMENT_SUFFIX = ".seg"
HEAD_FILE = "head.json"

_FRAME = struct.Struct(">II")  # length, crc32
_META = struct.Struct(">dqI")  # append_time, timestamp_ms, key_len
FRAME_OVERHEAD = _FRAME.size + _META.size


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One spooled record and where it sits (pass it back to `Spool.ack`)."""

    key: bytes
    value: bytes
    append_time: float  # time.time() when it was appended
    timestamp_ms: int | None  # the scrape time, when the caller gave one
    segment: int
    offset: int  # where the record starts in its segment
    end: int  # where the next record starts
    index: int  # ordinal of the record within its segment


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    size: int = 0
    count: int = 0


class Spool:
    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 256 * MiB,
        segment_bytes: int = 4 * MiB,
        fsync: bool = True,
    ) -> None:
        if segment_bytes <= 0 or max_bytes < 2 * segment_bytes:
            raise ValueError(
                f"spool max_bytes ({max_bytes}) must be at least twice segment_bytes ({segment_bytes})"
            )
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._lock = threading.RLock()
        self._segments: list[_Segment] = []
        self._head_seq = 0
        self._head_offset = 0
        self._head_index = 0  # records of the head segment before _head_offset
        self._dropped = 0
        self._fd: int | None = None
        self._closed = False
        self.directory.mkdir(parents=True, exist_ok=True)
        self._open()

    # -- public API -------------------------------------------------------------------------

    def append(self, key: bytes, value: bytes, timestamp_ms: int | None = None) -> None:
        """Durably add one record at the tail (dropping the oldest segments when full)."""
        meta = _META.pack(time.time(), -1 if timestamp_ms is None else int(timestamp_ms), len(key))
        payload = meta + bytes(key) + bytes(value)
        record = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        if len(record) > self.max_bytes - self.segment_bytes:
            raise ValueError(f"a {len(record)}-byte record cannot fit a {_human(self.max_bytes)} spool")
        with self._lock:
            self._check_open()
            self._make_room(len(record))
            active = self._segments[-1]
            if active.size > 0 and active.size + len(record) > self.segment_bytes:
                active = self._rotate()
            assert self._fd is not None
            try:
                written = os.write(self._fd, record)
                if written != len(record):
                    raise OSError(f"short write to spool segment {active.path} ({written}/{len(record)} bytes)")
                if self.fsync:
                    os.fsync(self._fd)
            except OSError:
                # Leave no half record behind: the next append would otherwise follow garbage.
                try:
                    os.ftruncate(self._fd, active.size)
                except OSError:
                    pass
                raise
            active.size += len(record)
            active.count += 1

    def peek(self, max_records: int) -> list[SpoolEntry]:
        """Up to `max_records` unacknowledged records from the head, in order, not removed."""
        entries: list[SpoolEntry] = []
        with self._lock:
            self._check_open()
            for segment in self._segments:
                if len(entries) >= max_records:
                    break
                if segment.seq < self._head_seq:
                    continue
                start = self._head_offset if segment.seq == self._head_seq else 0
                index = self._head_index if segment.seq == self._head_seq else 0
                if start >= segment.size:
                    continue
                with open(segment.path, "rb") as fh:
                    fh.seek(start)
                    data = fh.read(segment.size - start)
                pos = 0
                while pos < len(data) and len(entries) < max_records:
                    parsed = _parse(data, pos)
                    if parsed is None:  # cannot happen for data we wrote and validated
                        raise OSError(f"spool segment {segment.path} is corrupt at byte {start + pos}")
                    end, append_time, ts, key, value = parsed
                    entries.append(SpoolEntry(key, value, append_time, ts, segment.seq,
                                              start + pos, start + end, index))
                    pos = end
                    index += 1
        return entries

    def ack(self, entry: SpoolEntry) -> None:
        """Durably move the head past `entry` (and every record before it)."""
        with self._lock:
            self._check_open()
            if (entry.segment, entry.end) <= (self._head_seq, self._head_offset):
                return  # already acknowledged, or dropped because the spool was full
            self._head_seq, self._head_offset, self._head_index = entry.segment, entry.end, entry.index + 1
            self._advance_past_full_segments()
            self._write_head()
            self._delete_acked_segments()

    @property
    def depth(self) -> int:
        """Records not yet acknowledged."""
        with self._lock:
            return sum(s.count for s in self._segments if s.seq >= self._head_seq) - self._head_index

    @property
    def size_bytes(self) -> int:
        """Bytes on disk in segment files."""
        with self._lock:
            return sum(s.size for s in self._segments)

    @property
    def dropped_records(self) -> int:
        """Records dropped unacknowledged because the spool was full, since it was created."""
        with self._lock:
            return self._dropped

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._fd is not None:
                if self.fsync:
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Spool({str(self.directory)!r}, depth={self.depth}, size={self.size_bytes})"

    # -- opening and recovery ---------------------------------------------------------------

    def _open(self) -> None:
        head_seq, head_offset = self._read_head()
        for tmp in self.directory.glob(HEAD_FILE + ".tmp*"):
            tmp.unlink(missing_ok=True)
        found: list[_Segment] = []
        for path in self.directory.glob("*" + SEGMENT_SUFFIX):
            try:
                found.append(_Segment(int(path.stem), path))
            except ValueError:
                log.warning("spool %s: ignoring unexpected file %s", self.directory, path.name)
        found.sort(key=lambda s: s.seq)
        for segment in found:
            if segment.seq < head_seq:  # fully acknowledged; a crash came before its deletion
                segment.path.unlink(missing_ok=True)
                continue
            self._recover_segment(segment)
            self._segments.append(segment)
        if not self._segments or self._segments[0].seq != head_seq:
            # The head segment is gone: start at the oldest one left (or a fresh one).
            head_offset = 0
            if self._segments:
                head_seq = self._segments[0].seq
        self._head_seq = head_seq
        self._head_offset = 0
        self._head_index = 0
        if self._segments and head_offset > 0:
            self._head_offset, self._head_index = self._locate(self._segments[0], head_offset)
        if not self._segments:
            self._segments.append(self._create_segment(head_seq))
        self._advance_past_full_segments()
        self._delete_acked_segments()
        self._fd = os.open(self._segments[-1].path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if self.depth:
            log.info("spool %s: resumed with %d records pending (%s)", self.directory, self.depth,
                     _human(self.size_bytes))

    def _read_head(self) -> tuple[int, int]:
        path = self.directory / HEAD_FILE
        try:
            head = json.loads(path.read_text())
            self._dropped = int(head.get("dropped", 0))
            return int(head["segment"]), int(head["offset"])
        except FileNotFoundError:
            return 0, 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Written atomically, so this means outside damage: resend rather than lose.
            log.error("spool %s: unreadable %s (%s); starting from the oldest segment",
                      self.directory, HEAD_FILE, exc)
            return 0, 0

    def _recover_segment(self, segment: _Segment) -> None:
        """Count the records of a segment; cut a torn or corrupt tail."""
        data = segment.path.read_bytes()
        pos = count = 0
        while pos < len(data):
            parsed = _parse(data, pos)
            if parsed is None:
                break
            pos = parsed[0]
            count += 1
        if pos < len(data):
            with open(segment.path, "r+b") as fh:
                fh.truncate(pos)
                if self.fsync:
                    os.fsync(fh.fileno())
            log.warning("spool %s: cut %d bytes of a torn or corrupt record at the end of %s "
                        "(%d intact records kept)", self.directory, len(data) - pos, segment.path.name, count)
        segment.size, segment.count = pos, count

    def _locate(self, segment: _Segment, offset: int) -> tuple[int, int]:
        """The record boundary at or after `offset` in `segment`, and the records before it."""
        data = segment.path.read_bytes()
        pos = index = 0
        while pos < min(offset, segment.size):
            parsed = _parse(data, pos)
            if parsed is None:
                break
            pos = parsed[0]
            index += 1
        return pos, index

    # -- segments and head ------------------------------------------------------------------

    def _create_segment(self, seq: int) -> _Segment:
        path = self.directory / f"{seq:020d}{SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.close(fd)
        if self.fsync:
            self._fsync_dir()
        return _Segment(seq, path, 0, 0)

    def _rotate(self) -> _Segment:
        assert self._fd is not None
        if self.fsync:
            os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        segment = self._create_segment(self._segments[-1].seq + 1)
        self._segments.append(segment)
        self._fd = os.open(segment.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if self._advance_past_full_segments():
            self._write_head()
            self._delete_acked_segments()
        return segment

    def _make_room(self, incoming: int) -> None:
        dropped = 0
        while sum(s.size for s in self._segments) + incoming > self.max_bytes:
            if len(self._segments) == 1:
                self._rotate()  # the active segment is the oldest: seal it so it can go
                continue  # (rotating may already have deleted it, when it was all acknowledged)
            oldest = self._segments.pop(0)
            if oldest.seq == self._head_seq:
                dropped += oldest.count - self._head_index
                self._head_seq, self._head_offset, self._head_index = self._segments[0].seq, 0, 0
            elif oldest.seq > self._head_seq:
                dropped += oldest.count
            oldest.path.unlink(missing_ok=True)
        if dropped:
            self._dropped += dropped
            self._write_head()
            log.warning("spool full (%s): dropped %d oldest scrapes that Kafka never acknowledged "
                        "(%d dropped since the spool was created, %d still pending)",
                        _human(self.max_bytes), dropped, self._dropped, self.depth)

    def _advance_past_full_segments(self) -> bool:
        """Move a head sitting at the end of a sealed segment to the start of the next one."""
        moved = False
        while True:
            position = next((i for i, s in enumerate(self._segments) if s.seq == self._head_seq), None)
            if position is None or position == len(self._segments) - 1:
                return moved
            if self._head_offset < self._segments[position].size:
                return moved
            self._head_seq, self._head_offset, self._head_index = self._segments[position + 1].seq, 0, 0
            moved = True

    def _delete_acked_segments(self) -> None:
        while len(self._segments) > 1 and self._segments[0].seq < self._head_seq:
            self._segments.pop(0).path.unlink(missing_ok=True)

    def _write_head(self) -> None:
        path = self.directory / HEAD_FILE
        tmp = self.directory / f"{HEAD_FILE}.tmp"
        data = json.dumps({"segment": self._head_seq, "offset": self._head_offset,
                           "dropped": self._dropped}).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if self.fsync:
            self._fsync_dir()

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"spool {self.directory} is closed")


def _parse(data: bytes, pos: int) -> tuple[int, float, int | None, bytes, bytes] | None:
    """(end, append_time, timestamp_ms, key, value) of the record at `pos`, or None when the
    bytes there are not a whole, intact record."""
    if pos + _FRAME.size > len(data):
        return None
    length, crc = _FRAME.unpack_from(data, pos)
    start = pos + _FRAME.size
    end = start + length
    if length < _META.size or end > len(data):
        return None
    payload = data[start:end]
    if zlib.crc32(payload) != crc:
        return None
    append_time, ts, key_len = _META.unpack_from(payload, 0)
    if _META.size + key_len > length:
        return None
    key = payload[_META.size:_META.size + key_len]
    value = payload[_META.size + key_len:]
    return end, append_time, (None if ts < 0 else ts), key, value


def _human(size: int) -> str:
    for unit, factor in (("GiB", 1024 * MiB), ("MiB", MiB), ("KiB", 1024)):
        if size >= factor:
            number = size / factor
            return f"{number:.0f} {unit}" if number == int(number) else f"{number:.1f} {unit}"
    return f"{size} B"
