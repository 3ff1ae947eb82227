"""How the stream stages encode their state values and node partials: JSON, compressed with
zstd once it is large, so that every changelog and partial record stays under what Kafka takes.

A node serving 10,000 series of one family holds each series several times (its baseline and
every open window's partial): ~4.8 MB of JSON, over the broker's default limit of 1 MiB per
record, whose refusal would stop the worker. The copies repeat the same series ids, which
zstd's window (2 MiB at level 3) folds: the same state is ~180 kB compressed, in ~6 ms.
zlib's 32 KiB window cannot see the repetition (~370 kB, 50 ms).

A value under COMPRESS_FROM stays plain JSON, byte for byte what earlier versions wrote (the
ordinary ~13.5 kB node state pays nothing); a larger one is HEADER + a zstd frame. JSON values
always start with `{` or `[`, never with HEADER's NUL byte, so values written before
compression existed decode unchanged.
"""

from __future__ import annotations

from typing import Any

import cramjam
import orjson

HEADER = b"\x00zs1"
COMPRESS_FROM = 64 * 1024
LEVEL = 3
#: The largest value a stage writes to a changelog or the cluster-partials topic. Kafka's
#: default max.message.bytes is 1,048,588 bytes per record batch, key and overhead included.
MAX_VALUE_BYTES = 1_000_000


class StateTooLarge(ValueError):
    """A value that even compressed exceeds MAX_VALUE_BYTES."""


def encode_json(data: bytes) -> bytes:
    """JSON bytes as stored: the same bytes when small, else compressed behind HEADER; either
    way a new object of exactly its size. orjson returns its output in the buffer it grew while
    writing, never shrunk (a 13.5 kB node state in a 64 kB allocation): held in a table for
    every node, those buffers were half of a 5,000-node worker's memory."""
    if len(data) < COMPRESS_FROM:
        return memoryview(data).tobytes()
    return HEADER + bytes(cramjam.zstd.compress(data, LEVEL))


def encode(obj: Any, sort_keys: bool = False) -> bytes:
    return encode_json(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS if sort_keys else 0))


def to_json(raw: bytes) -> bytes:
    """The JSON bytes of a stored value (plain JSON as written by any version, or compressed)."""
    if not raw.startswith(HEADER):
        return raw
    try:
        data = bytes(cramjam.zstd.decompress(raw[len(HEADER):]))
    except cramjam.DecompressionError as exc:
        raise ValueError(f"compressed state value of {len(raw)} bytes does not decompress: {exc}") from None
    return data


def decode(raw: bytes) -> Any:
    """The JSON value of a stored value; ValueError (orjson.JSONDecodeError is one) when it is neither."""
    return orjson.loads(to_json(raw))


def fits(raw: bytes) -> bool:
    return len(raw) <= MAX_VALUE_BYTES
