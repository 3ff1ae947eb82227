"""Which samples of a scrape travel to Kafka, and with which labels.

Defaults: every `kubeproxy_*` family of every mode and version (iptables, ipvs, nftables,
winkernel, legacy `*_latency_microseconds`, 1.33+ `ip_family`) and nothing else. The
options follow the integration users come from: family allow/deny regexes, a metric-type
allowlist, dropped and renamed labels. Static extra labels travel once per scrape record,
not per sample.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from contracts.errors import ConfigError
from contracts.records import Sample
from producers.parser import METRIC_TYPES, ParseResult

KUBE_PROXY_PREFIX = "kubeproxy_"
DEFAULT_ALLOW = (r"^kubeproxy_",)


@dataclass(frozen=True)
class SelectionRules:
    allow_families: Sequence[str] = DEFAULT_ALLOW
    deny_families: Sequence[str] = ()
    types: frozenset[str] = METRIC_TYPES
    drop_labels: frozenset[str] = frozenset()
    rename_labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.types) - METRIC_TYPES
        if unknown:
            raise ConfigError(f"unknown metric type(s) {sorted(unknown)}; known: {sorted(METRIC_TYPES)}")
        for pattern in (*self.allow_families, *self.deny_families):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"family filter {pattern!r} is not a valid regular expression: {exc}") from None
        for old, new in self.rename_labels.items():
            if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", new) or new.startswith("__"):
                raise ConfigError(f"cannot rename label {old!r} to {new!r}: not a valid label name")


@dataclass(frozen=True)
class Selection:
    samples: tuple[Sample, ...]
    families: dict[str, str]  # selected family -> TYPE
    kube_proxy_metrics: bool  # did the target serve any kubeproxy_* family at all


class Selector:
    """Applies `SelectionRules` to parsed scrapes. Decisions are cached per family name:
    a node serves the same few dozen families every scrape."""

    def __init__(self, rules: SelectionRules | None = None) -> None:
        self.rules = rules or SelectionRules()
        self._allow = [re.compile(p) for p in self.rules.allow_families]
        self._deny = [re.compile(p) for p in self.rules.deny_families]
        self._decisions: dict[tuple[str, str], bool] = {}
        self._relabel = bool(self.rules.drop_labels or self.rules.rename_labels)

    def wants(self, family: str, family_type: str) -> bool:
        key = (family, family_type)
        decision = self._decisions.get(key)
        if decision is None:
            decision = (
                family_type in self.rules.types
                and any(p.search(family) for p in self._allow)
                and not any(p.search(family) for p in self._deny)
            )
            if len(self._decisions) < 10_000:  # a hostile target cannot grow it without bound
                self._decisions[key] = decision
        return decision

    def select(self, parsed: ParseResult) -> Selection:
        family_of, types = parsed.family_of, parsed.types
        families: dict[str, str] = {}
        selected: list[Sample] = []
        kube_proxy = False
        for sample in parsed.samples:
            family = family_of.get(sample.name, sample.name)
            family_type = types.get(family, "untyped")
            if family.startswith(KUBE_PROXY_PREFIX):
                kube_proxy = True
            if not self.wants(family, family_type):
                continue
            families[family] = family_type
            if self._relabel:
                sample = Sample(sample.name, self.relabel(sample.labels), sample.value, sample.timestamp_ms)
            selected.append(sample)
        return Selection(tuple(selected), families, kube_proxy)

    def relabel(self, labels: Mapping[str, str]) -> dict[str, str]:
        drop, rename = self.rules.drop_labels, self.rules.rename_labels
        return {rename.get(k, k): v for k, v in labels.items() if k not in drop}


def parse_label_pairs(pairs: Iterable[str], what: str) -> dict[str, str]:
    """`["a=b", "c=d"]` → `{"a": "b", "c": "d"}`, with an error naming the bad pair."""
    result: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"{what} {pair!r} is not NAME=VALUE")
        result[name.strip()] = value.strip()
    return result
