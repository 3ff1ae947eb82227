"""Publishing: the one place that builds the pipeline's kafka-python producers (the node
producer, `kpp import`, `kpp replay`).

Every producer gets the connection's settings (PLAINTEXT/SSL/SASL) and the client class whose
reconnect delay the Sender reads in the right unit (`connection.sender_client_class`, handed
over through kafka-python's documented `kafka_client=` option). What callers use of it is
kafka-python's documented producer API: `send()` returns a delivery future (`get()`,
`add_callback()`, `add_errback()`), `flush()`, `close()`.
"""

from __future__ import annotations

from typing import Any

from kafka_io.connection import KafkaConnection


def kafka_python_producer(connection: KafkaConnection, *, client_id: str, **overrides: Any) -> Any:
    """A kafka-python KafkaProducer for `connection`, named `client_id` (in broker logs and
    quotas), with the caller's producer settings (`acks`, `linger_ms`, ...) in `overrides`.
    Blocks until a broker answers or kafka-python's bootstrap timeout passes, as KafkaProducer
    does."""
    from kafka import KafkaProducer

    return KafkaProducer(**connection.kafka_producer_kwargs(), client_id=client_id, **overrides)
