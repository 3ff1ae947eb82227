"""The renderer writes numbers and lines the way Go's expfmt does (as in the real captures)."""

from __future__ import annotations

import math

import pytest

from simhelpers import CAPTURE_BY_VERSION, capture_text
from simulator.promtext import Sample, format_sample, go_float, histogram_samples


@pytest.mark.parametrize("version", sorted(CAPTURE_BY_VERSION))
def test_go_float_reproduces_every_value_in_the_real_captures(version: str) -> None:
    checked = 0
    for line in capture_text(version).splitlines():
        if not line or line.startswith("#"):
            continue
        written = line.rsplit(" ", 1)[1]
        assert go_float(float(written)) == written, line
        checked += 1
    assert checked > 300


@pytest.mark.parametrize("value, text", [
    (0.0, "0"), (1.0, "1"), (-2.5, "-2.5"), (1048576.0, "1.048576e+06"), (999999.0, "999999"),
    (0.0001, "0.0001"), (0.00001, "1e-05"), (math.inf, "+Inf"), (-math.inf, "-Inf"),
    (math.nan, "NaN"), (16.384, "16.384"), (1698752422.369931, "1.698752422369931e+09"),
])
def test_go_float_edges(value: float, text: str) -> None:
    assert go_float(value) == text


def test_label_values_are_escaped() -> None:
    line = format_sample(Sample("m", (("a", 'x"y\\z\nw'),), 1.0))
    assert line == 'm{a="x\\"y\\\\z\\nw"} 1'


def test_histogram_samples_are_cumulative_with_le_last() -> None:
    out = histogram_samples("h", (("ip_family", "IPv4"),), (0.1, 1.0), [2, 0, 3], 4.5)
    assert [(s.name, s.labels[-1], s.value) for s in out[:3]] == [
        ("h_bucket", ("le", "0.1"), 2.0), ("h_bucket", ("le", "1"), 2.0),
        ("h_bucket", ("le", "+Inf"), 5.0)]
    assert out[3] == Sample("h_sum", (("ip_family", "IPv4"),), 4.5)
    assert out[4] == Sample("h_count", (("ip_family", "IPv4"),), 5.0)
