"""What the pipeline's stages exchange through Kafka: topic names, message records (one
contract per topic: records, derived, dlq, late), the codec and the error tree. Nothing here
imports a Kafka client; the clients live in `kafka_io`, the process plumbing in `runtime`."""

from contracts.errors import ConfigError, KppError
from contracts.topics import Topics

__all__ = ["ConfigError", "KppError", "Topics"]
