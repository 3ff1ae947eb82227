"""Derived records stay byte-identical: the SHA-256 of everything the stages emit over four
simulated datasets (tests/streams/golden.py) equals the hash the code produced before the
stream stage was reworked for speed. The expected hashes were computed by that earlier code
(`python -m tests.streams.golden`); a change that alters any output byte fails here."""

from __future__ import annotations

import pytest

from tests.streams.golden import DATASETS, digest

EXPECTED = {
    "bench_like": (13311, "3c5fd36ed6c857ea48960263f41e2fa19a36129bb53b327c5937b0287822d5f3"),
    "batched": (2203, "9520ec266f4320763c42ea25751ef15be16238e38a3c208089bae46e00cbf6d1"),
    "crashed": (1354, "ee4e5d094110841533c0b2049a0a05a462daebd5a26f336671a541f0e19d89c8"),
    "versions": (2506, "e3da35193a2ce3d3e3f6cdc06924eade9a44ff1672d266508ec4cf7dcd95c2ca"),
}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_outputs_byte_identical_to_the_golden_hash(name):
    sent = DATASETS[name]()
    assert (len(sent), digest(sent)) == EXPECTED[name]
