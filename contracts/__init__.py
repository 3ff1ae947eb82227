"""What the pipeline's stages exchange: topic names, message records, the codec and
the Kafka connection settings every stage shares."""

from contracts.errors import ConfigError, KppError
from contracts.topics import Topics

__all__ = ["ConfigError", "KafkaConnection", "KppError", "Topics"]


def __getattr__(name: str):
    # Imported on first use: contracts.kafka pulls in the Kafka client, which commands that
    # never talk to Kafka (`kpp parse`) should not pay for at start-up.
    if name == "KafkaConnection":
        from contracts.kafka import KafkaConnection
        return KafkaConnection
    raise AttributeError(f"module 'contracts' has no attribute {name!r}")
