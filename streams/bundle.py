"""Node partials of one window and cluster in one `<prefix>.cluster-partials` message.

A window close sends one partial per node to the cluster stage. Sent one message each, the
cluster stage's consumer paid Faust's and aiokafka's per-message cost (~75 µs of a worker's
CPU) for every node-window, a quarter of a scrape's Faust cost on the benchmark. The node
stage therefore sends the partials of one (window, cluster) together, packed here:

    BUNDLE_HEADER, then for each partial: its length (4 bytes, big-endian) and its bytes

Each partial keeps the bytes it had as a message of its own (JSON, zstd-compressed when
large: streams/statecodec.py), which the cluster stage stores as they are. A bundle never
exceeds `max_bytes`; a partial too large to share a message goes alone, unbundled, as before.
BUNDLE_HEADER starts with a NUL byte like statecodec's HEADER but differs from it, and JSON
never starts with NUL, so a message is told apart by its first bytes; a cluster stage of this
version reads single partials and bundles alike.
"""

from __future__ import annotations

BUNDLE_HEADER = b"\x00kpb1"
_LENGTH = 4


def pack(partials: list[bytes], max_bytes: int) -> list[bytes]:
    """The messages that carry `partials`, in order: bundles of at most `max_bytes`, and any
    partial too large to share a message (header and length included) on its own."""
    out: list[bytes] = []
    parts: list[bytes] = []
    size = len(BUNDLE_HEADER)
    for partial in partials:
        if len(BUNDLE_HEADER) + _LENGTH + len(partial) > max_bytes:
            if parts:
                out.append(b"".join(parts))
                parts, size = [], len(BUNDLE_HEADER)
            out.append(partial)
            continue
        if parts and size + _LENGTH + len(partial) > max_bytes:
            out.append(b"".join(parts))
            parts, size = [], len(BUNDLE_HEADER)
        if not parts:
            parts.append(BUNDLE_HEADER)
        parts.append(len(partial).to_bytes(_LENGTH, "big"))
        parts.append(partial)
        size += _LENGTH + len(partial)
    if parts:
        out.append(b"".join(parts))
    return out


def unpack(value: bytes) -> list[bytes] | None:
    """The partials of a bundle; None when `value` is not one (a message of its own). A
    bundle whose lengths do not add up raises ValueError."""
    if not value.startswith(BUNDLE_HEADER):
        return None
    out = []
    at, end = len(BUNDLE_HEADER), len(value)
    while at < end:
        if at + _LENGTH > end:
            raise ValueError(f"bundle of partials cut short: {end - at} byte(s) where a length was expected")
        length = int.from_bytes(value[at:at + _LENGTH], "big")
        at += _LENGTH
        if length == 0 or at + length > end:
            raise ValueError(f"bundle of partials: a partial of {length} byte(s) at byte {at} of {end}")
        out.append(value[at:at + length])
        at += length
    if not out:
        raise ValueError("empty bundle of partials")
    return out
