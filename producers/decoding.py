"""Decoding a scrape body's Content-Encoding under one size cap.

httpx decodes each received chunk in one call, and a chain of encodings (`gzip, gzip`) stage
by stage: 2 kB of nested gzip become a gigabyte in memory before any size check runs. Here
every stage inflates at most `STEP` bytes per call and the cap applies to the decoded total of
the whole chain (and to the raw bytes), so decoding stops as soon as the body is too large.
"""

from __future__ import annotations

import zlib
from typing import Iterator

STEP = 64 * 1024  # largest piece one stage emits per call: bounds memory per stage
_GZIP_WBITS = 16 + zlib.MAX_WBITS


class BodyError(Exception):
    """The body cannot be accepted; the message says why (never its content)."""


class BodyTooLarge(BodyError):
    def __init__(self, limit: int, seen: int) -> None:
        super().__init__(f"body larger than the limit of {limit} bytes (decoded; "
                         f"stopped reading after {seen} bytes)")
        self.seen = seen


class EncodingError(BodyError):
    pass


def content_codings(header: str | None) -> list[str]:
    """`Content-Encoding: gzip, gzip` → `["gzip", "gzip"]`, in the order they were applied."""
    codings = [c.strip().lower() for c in (header or "").split(",") if c.strip()]
    return [c for c in codings if c != "identity"]


class _Inflater:
    """One gzip or deflate stage, emitting at most STEP bytes per piece."""

    def __init__(self, coding: str) -> None:
        if coding in ("gzip", "x-gzip"):
            self._wbits = _GZIP_WBITS
        elif coding == "deflate":
            self._wbits = 0  # zlib-wrapped or raw: decided by the first two bytes
        else:
            raise EncodingError(f"unsupported Content-Encoding {coding!r} (gzip and deflate are accepted)")
        self.coding = coding
        self._z = zlib.decompressobj(self._wbits) if self._wbits else None
        self._head = b""

    def feed(self, data: bytes) -> Iterator[bytes]:
        pending = data
        if self._z is None:
            self._head += data
            if len(self._head) < 2:
                return
            # A zlib header (RFC 1950) or else raw deflate, which some servers send as "deflate".
            cmf, flg = self._head[0], self._head[1]
            self._wbits = zlib.MAX_WBITS if cmf & 0x0F == 8 and (cmf * 256 + flg) % 31 == 0 else -zlib.MAX_WBITS
            self._z = zlib.decompressobj(self._wbits)
            pending = self._head
        while True:
            try:
                out = self._z.decompress(pending, STEP)
            except zlib.error as exc:
                raise EncodingError(f"{self.coding} body is corrupt: {exc}") from None
            if out:
                yield out
            if self._z.eof:
                pending = self._z.unused_data
                if pending and self._wbits == _GZIP_WBITS:
                    self._z = zlib.decompressobj(self._wbits)  # gzip allows several members
                    continue
                return  # trailing bytes after a deflate stream are ignored, as by httpx
            pending = self._z.unconsumed_tail
            # Input used up and less than a full STEP came out: nothing is held back.
            if not pending and len(out) < STEP:
                return

    def finish(self) -> Iterator[bytes]:
        if self._z is None or not self._z.eof:
            raise EncodingError(f"{self.coding} body ends before its compressed stream does (truncated)")
        return iter(())


class BodyDecoder:
    """Feed raw (still encoded) chunks; `finish()` returns the decoded body. Raises
    `BodyTooLarge` as soon as more than `limit` bytes were received or decoded."""

    def __init__(self, codings: list[str], limit: int) -> None:
        # Decode in the reverse order of application: the last coding applied comes off first.
        self._stages = [_Inflater(c) for c in reversed(codings)]
        self.limit = limit
        self.raw_bytes = 0
        self.size = 0  # decoded bytes so far
        self._chunks: list[bytes] = []

    def feed(self, raw: bytes) -> None:
        self.raw_bytes += len(raw)
        if self.raw_bytes > self.limit:
            raise BodyTooLarge(self.limit, self.raw_bytes)
        self._push(0, raw)

    def finish(self) -> bytes:
        for index, stage in enumerate(self._stages):
            for piece in stage.finish():
                self._push(index + 1, piece)
        return b"".join(self._chunks)

    def _push(self, index: int, data: bytes) -> None:
        if index == len(self._stages):
            self.size += len(data)
            if self.size > self.limit:
                raise BodyTooLarge(self.limit, self.size)
            self._chunks.append(data)
            return
        for piece in self._stages[index].feed(data):
            self._push(index + 1, piece)
