"""Kafka topic names. Every name takes a configurable prefix (default `kube-proxy`) so that
several pipelines, or a replay namespace, can share one cluster."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_PREFIX = "kube-proxy"


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str = DEFAULT_PREFIX

    @classmethod
    def from_env(cls) -> "Topics":
        return cls(os.environ.get("KPP_TOPIC_PREFIX", DEFAULT_PREFIX))

    def _name(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    @property
    def samples(self) -> str:
        """Raw scrapes, one message per scrape, key = node name."""
        return self._name("samples")

    @property
    def rates(self) -> str:
        return self._name("rates")

    @property
    def quantiles(self) -> str:
        return self._name("quantiles")

    @property
    def gauges(self) -> str:
        return self._name("gauges")

    @property
    def health(self) -> str:
        return self._name("health")

    @property
    def slo(self) -> str:
        return self._name("slo")

    @property
    def late(self) -> str:
        """Samples later than the allowed lateness, with the reason."""
        return self._name("late")

    @property
    def dlq(self) -> str:
        """Messages no stage could process, with the reason."""
        return self._name("dlq")

    def derived(self) -> tuple[str, ...]:
        return (self.rates, self.quantiles, self.gauges, self.health, self.slo)
