"""Node partials of a (window, cluster) travel in bundles (streams/bundle.py): the framing, and
the cluster stage reading bundles, single partials (what earlier node stages sent) and a
broken bundle."""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest

from streams import bundle, statecodec
from streams.config import StreamSettings
from streams.stages import ClusterStage, NodeStage
from tests.streams.reference import FakeClock, cluster_messages, recording_send
from tests.streams.simdata import scrape_records

S = StreamSettings(topic_prefix="b", partitions=1)


def test_pack_then_unpack_gives_the_partials_in_order_within_the_size_limit() -> None:
    rng = random.Random(5)
    for _ in range(200):
        limit = rng.randrange(20, 400)
        partials = [rng.randbytes(rng.randrange(1, 300)) for _ in range(rng.randrange(1, 30))]
        messages = bundle.pack(partials, limit)
        got = []
        for message in messages:
            unpacked = bundle.unpack(message)
            if unpacked is None:  # too large to share a message: on its own, as before
                assert len(bundle.BUNDLE_HEADER) + 4 + len(message) > limit
                got.append(message)
            else:
                assert len(message) <= limit
                got += unpacked
        assert got == partials


def test_what_is_not_a_bundle_and_broken_bundles() -> None:
    assert bundle.unpack(b'{"type": "partial"}') is None
    assert bundle.unpack(statecodec.HEADER + b"zstd frame") is None
    [whole] = bundle.pack([b"abc", b"de"], 100)
    for broken in (whole[:-1], whole + b"\x00", bundle.BUNDLE_HEADER, bundle.BUNDLE_HEADER + b"\x00\x00\x00\x00"):
        with pytest.raises(ValueError, match="bundle of partials"):
            bundle.unpack(broken)


def node_stage_partials(nodes: int = 6) -> list[tuple[bytes | None, bytes]]:
    sent: list = []
    partials: dict[int, list] = {0: []}

    async def run() -> None:
        stage = NodeStage(S, {}, recording_send(S, sent, partials), clock=FakeClock())
        for offset, r in enumerate(scrape_records(nodes=nodes, minutes=8)):
            await stage.sample(0, offset, r.key, r.encode())
        await stage.finish()

    asyncio.run(run())
    return partials[0]


def cluster_outputs(messages: list[tuple[bytes | None, bytes]]) -> tuple[list, dict]:
    sent: list = []

    async def run() -> dict:
        stage = ClusterStage(S, {}, recording_send(S, sent, {0: []}), clock=FakeClock())
        for offset, (key, value) in enumerate(messages):
            await stage.message(0, offset, key, value)
        await stage.flush()
        return stage.stats

    stats = asyncio.run(run())
    return sorted(sent), stats


def test_the_cluster_stage_reads_bundles_and_single_partials_alike() -> None:
    messages = node_stage_partials()
    bundles = [m for m in messages if bundle.unpack(m[1]) is not None]
    assert bundles and all(len(bundle.unpack(v)) == 6 for _k, v in bundles)  # one per (window, cluster)
    # what a node stage of an earlier version sent: every partial a message of its own
    singles = [(key, raw) for key, value in messages for raw in bundle.unpack(value) or [value]]
    assert len(singles) == len(messages) + 5 * len(bundles)
    from_bundles, stats = cluster_outputs(messages)
    from_singles, _ = cluster_outputs(singles)
    assert from_bundles == from_singles and stats["partials"] == 6 * len(bundles) and stats["windows"] > 0


def test_a_broken_bundle_is_dead_lettered_whole_and_the_stage_goes_on() -> None:
    messages = node_stage_partials(nodes=3)
    at = next(i for i, (_k, v) in enumerate(messages) if bundle.unpack(v) is not None)
    key, value = messages[at]
    broken = [*messages[:at], (key, value[:-3]), *messages[at + 1:]]
    sent, stats = cluster_outputs(broken)
    dead = [orjson.loads(v) for topic, _k, v in sent if topic == S.topics.dlq]
    assert len(dead) == 1 and dead[0]["reason"] == "malformed" and "bundle of partials" in dead[0]["error"]
    assert stats["dlq"] == 1 and stats["windows"] > 0
    # a bundle holding a progress marker is refused as a whole too
    marker = next(raw for _k, v in messages for raw in [v] if cluster_messages(v)[0]["type"] == "progress")
    mixed = bundle.pack([bundle.unpack(value)[0], marker], statecodec.MAX_VALUE_BYTES)
    sent, stats = cluster_outputs([(key, mixed[0])])
    assert stats["dlq"] == 1 and stats["partials"] == 0
