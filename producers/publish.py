"""Publish spooled scrapes to Kafka, losing nothing when Kafka is away.

`submit()` only appends to the on-disk spool and wakes the sender thread: it never waits for
Kafka. The sender thread

  * creates the kafka-python producer lazily, and again with exponential backoff (capped at
    ~5 s, with jitter) while no broker answers: without `api_version=` the KafkaProducer
    constructor blocks until a broker answers, so it never runs in the caller's thread;
  * peeks a batch from the head of the spool, sends it in order, waits for every future and
    acknowledges the spool only through the last contiguous success. On a failure the rest
    stays spooled and is sent again later, in the same order (a single in-order stream, so
    the order per key is kept);
  * closes and recreates the producer when sends keep failing or never complete (kafka-python
    users report producers that "hang after a broker restart").

Delivery is at-least-once. The producer is idempotent (acks=all), and the sender never gives
up on a record the producer still holds while the producer lives: records retried across a
broker outage shorter than `delivery_timeout_ms` arrive exactly once. When the producer does
give up on a record, the records of the same batch that Kafka took after it are remembered
and not sent again. Duplicates remain possible only when records reached Kafka but their
acknowledgement never reached the spool, that is across a crash or kill -9 between send and
ack, when `stop()` runs out of time with records in flight, or when a producer that hung (no
answer within `delivery_timeout_ms` + 5 s) is abandoned; and for a record that Kafka took
after an earlier record of the same key failed (it is sent again after that one, so the last
copy is in order). Consumers must tolerate duplicates (scrapes carry node and scrape time).

One WARNING is logged when Kafka becomes unreachable and one INFO when it is back, not one per
retry.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from contracts.errors import ConfigError
from kafka_io.connection import KafkaConnection
from producers.spool import Spool, SpoolEntry

log = logging.getLogger(__name__)

COMPRESSION_TYPES = ("gzip", "lz4", "zstd", "none")
BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 5.0
STALL_WARNING_S = 5.0  # a batch unacknowledged this long counts as "Kafka unreachable"
FAILURES_BEFORE_RECREATE = 2
BOOTSTRAP_TIMEOUT_MS = 2000  # one connection attempt of the producer constructor
# ... with a TLS or SASL handshake: on a busy host it can take over 2 s before the broker
# answers at all, and an attempt cut short never learns that a login was refused (the
# outage warning then names no cause)
HANDSHAKE_BOOTSTRAP_TIMEOUT_MS = 5000
AUTH_CAUSE_ATTEMPTS = 3  # SASL: attempts the outage warning waits for a named cause


@dataclass(frozen=True)
class PublisherStats:
    sent_records: int
    send_errors: int  # failed attempts: a producer that could not connect, a batch that failed
    last_error: str | None
    spool_depth: int
    dropped_records: int  # dropped by the spool when it was full
    rejected_records: int  # records Kafka can never take (too large), dropped with an ERROR
    last_latency_s: float | None  # append to Kafka ack, of the last record acknowledged
    latency_sum_s: float
    latency_count: int
    connected: bool

    @property
    def avg_latency_s(self) -> float | None:
        return self.latency_sum_s / self.latency_count if self.latency_count else None

    @property
    def sent(self) -> int:  # short alias
        return self.sent_records

    @property
    def dropped(self) -> int:  # short alias
        return self.dropped_records


class Publisher:
    def __init__(
        self,
        connection: KafkaConnection,
        topic: str,
        spool: Spool,
        *,
        compression_type: str = "gzip",
        linger_ms: int = 50,
        batch_records: int = 500,
        client_id: str = "kpp-producer",
        request_timeout_ms: int = 10_000,
        delivery_timeout_ms: int = 120_000,
        max_request_bytes: int = 1_048_576,
        replace_too_large: Callable[[bytes, str], bytes | None] | None = None,
    ) -> None:
        self.connection = connection
        self.topic = topic
        self.spool = spool
        self.compression_type = _check_compression(compression_type)
        self.linger_ms = linger_ms
        self.batch_records = max(1, batch_records)
        self.client_id = client_id
        self.request_timeout_ms = request_timeout_ms
        self.delivery_timeout_ms = max(delivery_timeout_ms, request_timeout_ms + linger_ms)
        self.max_request_bytes = max_request_bytes
        # value, why -> the record to send in place of one Kafka refuses as too large (None: drop it)
        self.replace_too_large = replace_too_large

        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._deadline: float | None = None  # monotonic; set by stop()
        self._thread: threading.Thread | None = None
        self._producer: Any = None
        # spool positions Kafka acknowledged behind a failed record: not sent again
        self._delivered: set[tuple[int, int]] = set()
        # spool positions of records Kafka refused as too large -> what is sent in their place
        self._replacements: dict[tuple[int, int], bytes] = {}

        self._sent = 0
        self._errors = 0
        self._rejected = 0
        self._last_error: str | None = None
        self._last_latency: float | None = None
        self._latency_sum = 0.0
        self._latency_count = 0
        self.observe_latency: Callable[[float], None] | None = None  # per acknowledged record (histogram)
        self._connected = False
        self._outage_since: float | None = None  # monotonic, while Kafka is unreachable
        self._warned = False

    # -- public API -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("publisher already started")
        self._thread = threading.Thread(target=self._run, name=f"kpp-publisher[{self.topic}]", daemon=True)
        self._thread.start()

    def submit(self, key: bytes, value: bytes, timestamp_ms: int | None = None) -> None:
        """Spool one record (durably) and wake the sender; never waits for Kafka."""
        self.spool.append(key, value, timestamp_ms)
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Send what can be sent within `timeout` seconds, then close the producer. What is not
        sent stays in the spool for the next start."""
        with self._lock:
            self._deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout + 2.0)
            if self._thread.is_alive():
                log.warning("publisher to %s did not stop within %.1f s", self.topic, timeout)
        else:
            self._close_producer(0)
        depth = self.spool.depth
        if depth:
            log.info("publisher stopped with %d records left in the spool for the next start", depth)

    @property
    def stats(self) -> PublisherStats:
        with self._lock:
            return PublisherStats(
                sent_records=self._sent,
                send_errors=self._errors,
                last_error=self._last_error,
                spool_depth=self.spool.depth,
                dropped_records=self.spool.dropped_records,
                rejected_records=self._rejected,
                last_latency_s=self._last_latency,
                latency_sum_s=self._latency_sum,
                latency_count=self._latency_count,
                connected=self._connected,
            )

    # -- sender thread ----------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        try:
            while not (self._stopping.is_set() and (self._time_left() <= 0 or self.spool.depth == 0)):
                try:
                    failures = self._step(failures)
                except Exception:  # noqa: BLE001 - a bug or a disk error: keep the thread alive
                    failures += 1
                    log.exception("publisher to %s: unexpected error; records stay in the spool", self.topic)
                    self._close_producer(0)
                    self._sleep(_backoff(failures))
        finally:
            self._close_producer(max(0.0, min(self._time_left(), 5.0)))
            with self._lock:
                self._connected = False

    def _step(self, failures: int) -> int:
        """One round of the sender: wait for work, connect, or send one batch. Returns the
        number of consecutive failures."""
        if self.spool.depth == 0:
            self._wake.wait(1.0)
            self._wake.clear()
            return failures
        if self._producer is None:
            attempt = time.monotonic()
            try:
                self._producer = self._create_producer()
            except Exception as exc:  # noqa: BLE001 - no broker, bad credentials, ...: retry later
                # explain(): a refused login or TLS handshake, named from the client's records
                # (of any attempt in this outage). kafka-python reports a refused SASL login as
                # a bootstrap timeout and shows the cause on some attempts only: with SASL, the
                # one warning waits up to AUTH_CAUSE_ATTEMPTS attempts for a named cause.
                with self._lock:
                    since = self._outage_since if self._outage_since is not None else attempt
                reason = self.connection.explain(exc, since=since)
                named = reason.startswith(("authentication failed", "TLS handshake failed"))
                defer = self.connection.uses_sasl and not named and failures + 1 < AUTH_CAUSE_ATTEMPTS
                self._failed(f"cannot connect: {reason}", defer_warning=defer)
                self._sleep(_backoff(failures + 1))
                return failures + 1
        if self._send_batch(self.spool.peek(self.batch_records)):
            self._reachable()
            return 0
        failures += 1
        if failures >= FAILURES_BEFORE_RECREATE:
            log.info("recreating the Kafka producer after %d failed attempts", failures)
            self._close_producer(0)
        self._sleep(_backoff(failures))
        return failures

    def _create_producer(self) -> Any:
        from kafka_io.publish import kafka_python_producer

        timeout_ms = (HANDSHAKE_BOOTSTRAP_TIMEOUT_MS if self.connection.uses_sasl or self.connection.uses_ssl
                      else BOOTSTRAP_TIMEOUT_MS)
        if self._stopping.is_set():
            timeout_ms = int(max(100, min(timeout_ms, self._time_left() * 1000)))
        return kafka_python_producer(
            self.connection,  # with the client whose Sender reads its reconnect delay in ms
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            max_in_flight_requests_per_connection=5,
            compression_type=None if self.compression_type == "none" else self.compression_type,
            linger_ms=self.linger_ms,
            request_timeout_ms=self.request_timeout_ms,
            delivery_timeout_ms=self.delivery_timeout_ms,
            max_block_ms=10_000,  # send() waits this long at most for a topic's metadata
            max_request_size=self.max_request_bytes,
            bootstrap_timeout_ms=timeout_ms,  # the constructor blocks until a broker answers
            reconnect_backoff_max_ms=int(BACKOFF_MAX_S * 1000),  # default 30 s: slow after a restart
        )

    def _send_batch(self, entries: list[SpoolEntry]) -> bool:
        """Send `entries` in order; ack the spool through the last contiguous success. True
        when every entry was acknowledged (or rejected for good)."""
        from kafka_io.publish import MessageSizeTooLargeError

        if not entries:
            return True
        producer = self._producer
        futures: list[Any] = []
        send_error: str | None = None
        for entry in entries:
            position = (entry.segment, entry.offset)
            if position in self._delivered:
                futures.append(_ALREADY)  # Kafka has it from an earlier, partly failed batch
                continue
            value = self._replacements.get(position, entry.value)
            try:
                try:
                    futures.append(producer.send(self.topic, key=entry.key, value=value,
                                                 timestamp_ms=entry.timestamp_ms))
                except MessageSizeTooLargeError as exc:
                    # Over our own max request size: its stand-in goes in its place, in order.
                    replacement = None if position in self._replacements else self._replacement(entry, exc)
                    if replacement is None:
                        raise
                    self._replacements[position] = replacement
                    futures.append(producer.send(self.topic, key=entry.key, value=replacement,
                                                 timestamp_ms=entry.timestamp_ms))
            except MessageSizeTooLargeError as exc:
                futures.append(exc)  # can never be sent: rejected below, in order
            except Exception as exc:  # noqa: BLE001 - the rest of the batch waits for next time
                send_error = f"send failed: {_describe(exc)}"
                break
        # Wait for every future: the producer retries internally until delivery_timeout_ms, so a
        # record is only given up when the producer itself has given up on it (or hangs). After
        # a failure the rest of the batch is still waited for, so that nothing of this batch is
        # in flight when it is sent again, and the records Kafka took are remembered so they are
        # not sent twice (unless a record of the same key failed before them: then they are sent
        # again after it, to keep that key's order).
        deadline = time.monotonic() + self.delivery_timeout_ms / 1000 + 5.0
        started = time.monotonic()
        acked: SpoolEntry | None = None
        error: str | None = None
        replaced = False  # a record the broker refused gets a stand-in: the batch goes again
        refused = False  # the broker refused a record as too large (not our own size check)
        failed_keys: set[bytes] = set()
        for entry, future in zip(entries, futures):
            if future is _ALREADY:
                outcome = None
            elif isinstance(future, Exception):
                outcome = future
            else:
                outcome = self._wait(future, deadline, started)
            if isinstance(outcome, _Abandoned):
                error = error or f"delivery failed: {outcome}"
                self._close_producer(0)  # hung or stopping: drop it, the spool still has everything
                break
            if outcome is None:
                if future is not _ALREADY:
                    self._count_sent(entry)
                if (error is not None or replaced) and entry.key not in failed_keys:
                    self._delivered.add((entry.segment, entry.offset))
            elif isinstance(outcome, MessageSizeTooLargeError) and refused and future is not outcome:
                # After one refusal kafka-python's idempotent producer fails every later record
                # with the same error: these are sent again, by a new producer.
                error = error or f"delivery failed: {_describe(outcome)}"
                failed_keys.add(entry.key)
            elif isinstance(outcome, MessageSizeTooLargeError):
                refused = refused or future is not outcome
                position = (entry.segment, entry.offset)
                # Refused by the broker (the topic's max.message.bytes, after compression): send
                # its stand-in in its place, and what followed it of the same key after that.
                replacement = None if position in self._replacements else self._replacement(entry, outcome)
                if replacement is not None:
                    self._replacements[position] = replacement
                    replaced = True
                    failed_keys.add(entry.key)
                else:
                    self._reject(entry, outcome)
                    if error is not None or replaced:
                        self._delivered.add(position)
            else:
                error = error or f"delivery failed: {_describe(outcome)}"
                failed_keys.add(entry.key)
            if error is None and not replaced:
                acked = entry
        if acked is not None:
            self.spool.ack(acked)
            self._delivered = {p for p in self._delivered if p > (acked.segment, acked.offset)}
            self._replacements = {p: v for p, v in self._replacements.items() if p > (acked.segment, acked.offset)}
        if refused:
            self._close_producer(0)  # see above: a new producer for what follows
        if acked is not entries[-1]:
            if refused or (error is None and send_error is None):
                return True  # Kafka is fine: the next round sends the stand-ins and the rest at once
            self._failed(error or send_error or "send failed")
            return False
        return True

    def _replacement(self, entry: SpoolEntry, exc: Exception) -> bytes | None:
        if self.replace_too_large is None:
            return None
        try:
            return self.replace_too_large(entry.value, _describe(exc))
        except Exception:  # noqa: BLE001 - a bug in the stand-in must not stop delivery
            log.exception("building the stand-in of a record Kafka refused failed; dropping the record")
            return None

    def _count_sent(self, entry: SpoolEntry) -> None:
        latency = max(0.0, time.time() - entry.append_time)
        with self._lock:
            self._sent += 1
            self._last_latency = latency
            self._latency_sum += latency
            self._latency_count += 1
        if self.observe_latency is not None:
            self.observe_latency(latency)

    def _wait(self, future: Any, deadline: float, stalled_since: float) -> Exception | None:
        """None on success, else the failure (an `_Abandoned` when we stop waiting)."""
        from kafka_io.publish import KafkaTimeoutError

        while True:
            limit = deadline
            if self._stopping.is_set():
                limit = min(limit, time.monotonic() + self._time_left())
            remaining = limit - time.monotonic()
            if remaining <= 0:
                return _Abandoned("stopping" if self._stopping.is_set() else
                                  f"no acknowledgement within {self.delivery_timeout_ms / 1000:.0f} s")
            try:
                future.get(timeout=min(remaining, 1.0))
                return None
            except KafkaTimeoutError as exc:
                if future.is_done:
                    return exc  # the producer gave up on it (delivery timeout)
                if time.monotonic() - stalled_since > STALL_WARNING_S:
                    self._failed(f"no acknowledgement for {time.monotonic() - stalled_since:.0f} s "
                                 "(producer retrying)", count=False)
            except Exception as exc:  # noqa: BLE001
                return exc

    def _reject(self, entry: SpoolEntry, exc: Exception) -> None:
        with self._lock:
            self._rejected += 1
        log.error("dropping a %d-byte record for key %r that Kafka refuses: %s",
                  len(entry.value), entry.key[:100], _describe(exc))

    # -- connection state -------------------------------------------------------------------

    def _failed(self, error: str, *, count: bool = True, defer_warning: bool = False) -> None:
        with self._lock:
            if count:
                self._errors += 1
            self._last_error = error
            self._connected = False
            if self._outage_since is None:
                self._outage_since = time.monotonic()
            warn = not self._warned and not defer_warning
            self._warned = self._warned or warn
        if warn:
            log.warning("Kafka at %s unreachable for topic %s: %s; spooling (%d records pending)",
                        self.connection.describe(), self.topic, error, self.spool.depth)

    def _reachable(self) -> None:
        with self._lock:
            was_out = self._outage_since
            warned = self._warned
            self._connected = True
            self._outage_since = None
            self._warned = False
        if warned and was_out is not None:
            log.info("Kafka at %s reachable again after %.1f s; %d spooled records pending",
                     self.connection.describe(), time.monotonic() - was_out, self.spool.depth)

    # -- helpers ----------------------------------------------------------------------------

    def _time_left(self) -> float:
        with self._lock:
            deadline = self._deadline
        return float("inf") if deadline is None else deadline - time.monotonic()

    def _sleep(self, seconds: float) -> None:
        """Back off; stop() cuts a running back-off short, and none runs past its deadline."""
        if not self._stopping.is_set():
            self._stopping.wait(seconds)
        else:
            time.sleep(max(0.0, min(seconds, self._time_left())))

    def _close_producer(self, timeout: float) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=timeout)
            except Exception as exc:  # noqa: BLE001
                log.debug("closing the Kafka producer: %s", exc)


class _Abandoned(Exception):
    """We stopped waiting for a record the producer still holds."""


_ALREADY = object()  # a record Kafka acknowledged in an earlier attempt


def _backoff(attempt: int) -> float:
    return min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def _describe(exc: BaseException) -> str:
    text, name = str(exc), type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name


def _check_compression(compression_type: str | None) -> str:
    name = (compression_type or "none").lower()
    if name not in COMPRESSION_TYPES:
        raise ConfigError(f"compression type {compression_type!r} is not one of {', '.join(COMPRESSION_TYPES)}")
    from kafka_io.publish import compression_available

    if name == "lz4" and not compression_available("lz4"):
        raise ConfigError("lz4 compression needs the lz4 library: pip install 'kube-proxy-pipeline[lz4]'")
    if name == "zstd" and not compression_available("zstd"):
        raise ConfigError("zstd compression needs the zstandard library: pip install 'kube-proxy-pipeline[zstd]'")
    return name
