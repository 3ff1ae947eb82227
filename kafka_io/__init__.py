"""The pipeline's one Kafka layer: the only package that imports a Kafka client library
(Faust's own use inside the stream workers aside).

- `connection`: the connection setting every stage shares (PLAINTEXT/SSL/SASL, secrets
  masked), its mapping onto each client, and the one-line errors every command prints when
  Kafka cannot be used (exit 3; 4 for refused credentials or TLS).
- `admin`: topic administration (ensure with partitions and configs; describe).

Which client where, and why:
- The node producer publishes with kafka-python: it is the pipeline's published choice for
  producers, a plain thread-based client that fits a small scrape loop without an event
  loop. kafka-python 3.0's sender treats its reconnect delay (seconds) as milliseconds and
  polls every few ms while the broker is away; our fix is a client subclass handed to our own
  producers through kafka-python's documented `kafka_client=` option, never a process-wide
  patch (see `connection.sender_client_class`).
- Consumers use aiokafka: it is already a dependency (Faust is built on it), it decodes
  record batches in C, and its rebalance listener is a coroutine on the consumer's own
  event loop, so no private decoder swap or IO-thread workaround is needed.

Nothing here imports a client at module import time: the pure modules (windows, quantiles,
parser, encoders) never load one.
"""
