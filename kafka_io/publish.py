"""Publishing: the one place that builds the pipeline's kafka-python producers (the node
producer, `kpp import`, `kpp replay`).

Every producer gets the connection's settings (PLAINTEXT/SSL/SASL) and the client class whose
reconnect delay the Sender reads in the right unit (`connection.sender_client_class`, handed
over through kafka-python's documented `kafka_client=` option). What callers use of it is
kafka-python's documented producer API: `send()` returns a delivery future (`get()`,
`add_callback()`, `add_errback()`, `is_done`), `flush()`, `close()`; and the two exceptions
the node producer tells apart, `MessageSizeTooLargeError` (a record over max_request_size,
raised by send()) and `KafkaTimeoutError` (a future's `get(timeout)` expired, or the producer
gave up on the record), loaded from kafka-python only when asked for.
"""

from __future__ import annotations

from typing import Any

from kafka_io.connection import KafkaConnection

COMPRESSION_LIBRARIES = {"lz4": "has_lz4", "zstd": "has_zstd", "snappy": "has_snappy"}
_CLIENT_ERRORS = ("MessageSizeTooLargeError", "KafkaTimeoutError")


def __getattr__(name: str) -> Any:
    """The producer's exception classes, imported from kafka-python when first asked for (so
    that importing this module loads no client)."""
    if name in _CLIENT_ERRORS:
        import kafka.errors

        return getattr(kafka.errors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def compression_available(compression_type: str) -> bool:
    """Whether kafka-python can compress with `compression_type` here (lz4, zstd and snappy
    need optional libraries; gzip and none always work)."""
    check = COMPRESSION_LIBRARIES.get(compression_type)
    if check is None:
        return True
    from kafka import codec

    return bool(getattr(codec, check)())


def kafka_python_producer(connection: KafkaConnection, *, client_id: str, **overrides: Any) -> Any:
    """A kafka-python KafkaProducer for `connection`, named `client_id` (in broker logs and
    quotas), with the caller's producer settings (`acks`, `linger_ms`, ...) in `overrides`.
    Blocks until a broker answers or kafka-python's bootstrap timeout passes, as KafkaProducer
    does."""
    from kafka import KafkaProducer

    return KafkaProducer(**connection.kafka_producer_kwargs(), client_id=client_id, **overrides)
