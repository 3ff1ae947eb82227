"""Body decoding under one cap across all content-encodings: nested gzip bombs stop at the
cap without inflating, ordinary encodings decode as httpx would."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import pytest

from producers.decoding import STEP, BodyDecoder, BodyTooLarge, EncodingError, content_codings

MiB = 1024 * 1024


def gzip_of_zeros(size: int) -> bytes:
    """gzip of `size` zero bytes, built piecewise so the test itself stays small."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MiB)
    return b"".join([*(z.compress(block) for _ in range(size // MiB)), z.flush()])


def decode(codings: list[str], raw: bytes, limit: int, chunk: int = 16 * 1024) -> bytes:
    decoder = BodyDecoder(codings, limit)
    for i in range(0, len(raw), chunk):
        decoder.feed(raw[i:i + chunk])
    return decoder.finish()


def test_nested_gzip_bomb_stops_at_the_cap_without_inflating() -> None:
    bomb = gzip.compress(gzip_of_zeros(256 * MiB))  # Content-Encoding: gzip, gzip
    assert len(bomb) < 10_000
    decoder = BodyDecoder(content_codings("gzip, gzip"), 1 * MiB)
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLarge) as caught:
            decoder.feed(bomb)
            decoder.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "limit of 1048576 bytes" in str(caught.value)
    assert 1 * MiB < caught.value.seen <= 1 * MiB + STEP
    assert peak < 4 * MiB, f"decoding held {peak} bytes"


def test_one_cap_for_the_whole_chain_and_the_raw_bytes() -> None:
    body = b"kubeproxy_x 1\n" * 10_000  # 140 kB
    assert decode(["gzip", "gzip"], gzip.compress(gzip.compress(body)), len(body)) == body
    with pytest.raises(BodyTooLarge):
        decode(["gzip", "gzip"], gzip.compress(gzip.compress(body)), len(body) - 1)
    with pytest.raises(BodyTooLarge):
        decode([], body, len(body) - 1)  # identity: the raw bytes count


@pytest.mark.parametrize("codings, encode", [
    ([], lambda b: b),
    (["gzip"], gzip.compress),
    (["x-gzip"], gzip.compress),
    (["deflate"], zlib.compress),  # zlib-wrapped, as the standard says
    (["deflate"], lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some servers send
    (["gzip"], lambda b: gzip.compress(b[:1000]) + gzip.compress(b[1000:])),  # two gzip members
    (["deflate", "gzip"], lambda b: gzip.compress(zlib.compress(b))),  # applied in this order
])
def test_encodings_decode_like_httpx(codings: list[str], encode) -> None:  # noqa: ANN001
    body = b"".join(b"kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"%d\"} %d\n" % (i, i * 7)
                    for i in range(5000))
    for chunk in (1, 100, 70_000):
        assert decode(codings, encode(body), 16 * MiB, chunk) == body


def test_content_encoding_header() -> None:
    assert content_codings("gzip, GZIP") == ["gzip", "gzip"]
    assert content_codings("identity") == [] and content_codings(None) == [] and content_codings("") == []


@pytest.mark.parametrize("codings, raw, message", [
    (["br"], b"anything", "unsupported Content-Encoding 'br'"),
    (["gzip"], gzip.compress(b"x" * 5000)[:-20], "truncated"),
    (["gzip"], b"not gzip at all", "gzip body is corrupt"),
])
def test_bad_encodings_are_named(codings: list[str], raw: bytes, message: str) -> None:
    with pytest.raises(EncodingError, match=message):
        decode(codings, raw, MiB)
