"""Settings of the stream stage (`kpp stream`), as one frozen object the pure modules share.

Everything is integer milliseconds inside, so window arithmetic is exact under replay.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contracts.topics import DEFAULT_PREFIX, Topics

#: Quantiles emitted by default for every duration histogram.
DEFAULT_QUANTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True, kw_only=True)
class StreamSettings:
    topic_prefix: str = DEFAULT_PREFIX
    window_sizes_s: tuple[int, ...] = (60, 300)
    allowed_lateness_s: float = 30.0  # 2 x the default 15 s scrape interval
    idle_timeout_s: float = 60.0
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES
    slo_threshold_s: float = 30.0
    slo_window_s: int = 300
    slo_quantile: float = 0.99
    stall_threshold_s: float = 60.0
    node_gone_after_s: float = 600.0
    cluster_timeout_s: float = 120.0
    # How far a scrape may be stamped ahead of the trusted clock (the worker's wall clock; in
    # replay the record's Kafka timestamp, see streams/replay.py). One producer with a fast
    # clock must not drag its partition's watermark into the future: every other node's
    # scrapes would then be late.
    max_clock_skew_s: float = 300.0
    partitions: int = 1
    web_port: int | None = None
    data_dir: str = ".kpp/streams"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.window_sizes_s or any(int(s) <= 0 for s in self.window_sizes_s):
            raise ValueError("window sizes must be positive whole seconds")
        object.__setattr__(self, "window_sizes_s", tuple(sorted({int(s) for s in self.window_sizes_s})))
        if self.slo_window_s % self.step_s:
            raise ValueError(f"the SLO window ({self.slo_window_s} s) must be a multiple of the smallest "
                             f"window ({self.step_s} s)")
        if any(not 0 <= q <= 1 for q in self.quantiles):
            raise ValueError("quantiles must be in [0, 1]")
        if self.partitions < 1:
            raise ValueError("partitions must be >= 1")
        if self.max_clock_skew_s < 0:
            raise ValueError("the maximum clock skew must be >= 0")

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def sizes_ms(self) -> tuple[int, ...]:
        return tuple(s * 1000 for s in self.window_sizes_s)

    @property
    def step_s(self) -> int:
        """The smallest window: the SLO is evaluated at each of its closes."""
        return min(self.window_sizes_s)

    @property
    def lateness_ms(self) -> int:
        return int(round(self.allowed_lateness_s * 1000))

    @property
    def node_gone_after_ms(self) -> int:
        return int(round(self.node_gone_after_s * 1000))

    @property
    def max_clock_skew_ms(self) -> int:
        return int(round(self.max_clock_skew_s * 1000))

    @property
    def cluster_partials_topic(self) -> str:
        return f"{self.topic_prefix}.cluster-partials"

    @property
    def ticks_topic(self) -> str:
        return f"{self.topic_prefix}.stream-ticks"

    @property
    def cluster_ticks_topic(self) -> str:
        return f"{self.topic_prefix}.cluster-ticks"


def quantile_name(q: float) -> str:
    """0.5 -> p50, 0.99 -> p99, 0.999 -> p999, 0.995 -> p995."""
    text = f"{q * 100:.6g}"
    return "p" + text.replace(".", "")
