"""What the pipeline's stages exchange: topic names, message records, the codec and
the Kafka connection settings every stage shares."""

from contracts.errors import ConfigError, KppError
from contracts.kafka import KafkaConnection
from contracts.topics import Topics

__all__ = ["ConfigError", "KafkaConnection", "KppError", "Topics"]
