"""The demo's live summary reads the derived topics only when the stream stage runs: without
it they never appear, and waiting for them would leave the scrape counts at zero."""

from __future__ import annotations

from contracts.topics import Topics
from kpp.demo import summary_topics


def test_the_summary_reads_the_derived_topics_only_with_the_stream_stage() -> None:
    topics = Topics("demo")
    assert summary_topics(topics, with_stream_stage=True) == [topics.samples, topics.quantiles, topics.slo]
    assert summary_topics(topics, with_stream_stage=False) == [topics.samples]
