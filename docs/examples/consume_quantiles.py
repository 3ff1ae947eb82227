#!/usr/bin/env python3
"""Read kube-proxy quantiles from Kafka and print one line per record.

Needs only kafka-python (`pip install kafka-python`). Run:

    python consume_quantiles.py --bootstrap 127.0.0.1:9092 --topic-prefix kube-proxy --max-records 20

Output, one line per record:

    2026-01-02T15:05:00Z  60s  node     node-007  sync_proxy_rules_duration_seconds  p50=0.012 p99=0.061 count=4
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math

from kafka import KafkaConsumer

# Prometheus values can be NaN or infinite; JSON has no such numbers, so the pipeline writes them
# as these strings. null means "nothing to compute" (e.g. a quantile of zero observations).
SPECIAL = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}


def number(value):
    """A value of a derived record as a Python float, or None for null."""
    if value is None:
        return None
    if isinstance(value, str):
        return SPECIAL[value]
    return float(value)


def show(value) -> str:
    return "-" if value is None else f"{value:.6g}"


def main() -> int:
    parser = argparse.ArgumentParser(description="print kube-proxy quantiles from <prefix>.quantiles")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    parser.add_argument("--topic-prefix", default="kube-proxy", help="topic prefix (default kube-proxy)")
    parser.add_argument("--max-records", type=int, default=0, help="stop after this many records (0: follow)")
    parser.add_argument("--group", default=None,
                        help="consumer group: committed offsets, resume after a restart (default: none, "
                             "read from the beginning)")
    args = parser.parse_args()

    consumer = KafkaConsumer(
        f"{args.topic_prefix}.quantiles",
        bootstrap_servers=args.bootstrap.split(","),
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=args.group is not None,
        key_deserializer=lambda key: key.decode("utf-8") if key is not None else None,
        value_deserializer=lambda value: json.loads(value),
    )
    seen = 0
    try:
        for message in consumer:
            record = message.value
            if record.get("schema") != "kube-proxy.quantiles/v1":
                continue  # a newer contract version: skip what this code does not understand
            values = {name: number(v) for name, v in record["values"].items()}
            end = dt.datetime.fromtimestamp(record["window"]["end_ms"] / 1000, dt.timezone.utc)
            who = record["node"] if record["scope"] == "node" else record["cluster"]
            labels = ",".join(f"{k}={v}" for k, v in sorted(record["labels"].items()))
            metric = record["metric"] + (f"{{{labels}}}" if labels else "")
            quantiles = " ".join(f"{name}={show(values[name])}" for name in sorted(values)
                                 if name.startswith("p"))
            print(f"{end:%Y-%m-%dT%H:%M:%SZ}  {record['window']['size_s']}s  {record['scope']:<7}  {who}  "
                  f"{metric}  {quantiles} count={show(values.get('count'))}", flush=True)
            seen += 1
            if args.max_records and seen >= args.max_records:
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
