"""Our KafkaProducers get a client whose reconnect delay is in the unit kafka-python's Sender
reads (milliseconds), through KafkaProducer's `kafka_client=` option: while the broker is
down the Sender waits out the backoff instead of re-polling every few milliseconds.

The broker is "stopped" for the producer alone: it reaches the shared broker through an HTTP
CONNECT proxy (kafka-python's `proxy_url=`), which the test then closes, connections and
listening port, so every reconnect is refused."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest

from kafka_io.connection import KafkaConnection, sender_client_class

WATCH_S = 2.0


class ConnectProxy:
    """A minimal HTTP CONNECT proxy: forwards to the address asked for, until `stop()`."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = "http://127.0.0.1:%d" % self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
        host, _, port = head.split(b" ")[1].decode().rpartition(":")
        upstream = socket.create_connection((host.strip("[]"), int(port)))
        with self.lock:
            if self.stopped:
                client.close()
                upstream.close()
                return
            self.sockets += [client, upstream]
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        self._pipe(client, upstream)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        try:  # wakes the accepting thread (close() alone leaves the port listening while it waits)
            self.server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.server.close()
        with self.lock:
            self.stopped = True
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


def counting(client_class: type) -> type:
    class Counting(client_class):
        polls = 0

        def poll(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
            type(self).polls += 1
            return super().poll(*args, **kwargs)

    return Counting


def sender_polls_while_broker_down(kafka: KafkaConnection, topic: str, client_class: type) -> int:
    """Client polls of a producer's Sender during WATCH_S seconds with a record waiting and
    its broker gone."""
    from kafka import KafkaProducer

    proxy = ConnectProxy()
    client = counting(client_class)
    producer = KafkaProducer(**kafka.kafka_python_kwargs(), kafka_client=client, proxy_url=proxy.address,
                             acks="all", linger_ms=0, request_timeout_ms=3_000,
                             delivery_timeout_ms=4_000)  # the waiting record expires soon after WATCH_S
    try:
        producer.send(topic, b"before").get(timeout=30)  # connected, leader known
        proxy.stop()  # the broker is gone for this producer
        time.sleep(0.5)  # let the Sender notice the closed connections
        producer.send(topic, b"while down")  # a batch waits for the leader: the Sender's busy case
        before = client.polls
        time.sleep(WATCH_S)  # counting what happens in a fixed span is the measurement itself
        return client.polls - before
    finally:
        producer.close(timeout=15)  # flushes: returns once the waiting record has expired


@pytest.mark.integration
def test_sender_waits_while_its_broker_is_down(kafka: KafkaConnection) -> None:
    from kafka.net.compat import KafkaNetClient

    topic = f"test.sender-delay.{uuid.uuid4().hex[:8]}"
    KafkaConnection.check(kafka, timeout_s=15)
    ours = sender_polls_while_broker_down(kafka, topic, sender_client_class())
    stock = sender_polls_while_broker_down(kafka, topic, KafkaNetClient)
    # The stock client's Sender re-polls after a fraction of a millisecond (seconds read as ms);
    # ours waits out the reconnect backoff (50 ms doubling towards 1 s by default).
    assert ours < 200, ours
    assert stock > 10 * max(ours, 1), (stock, ours)


def test_producer_kwargs_hand_our_client_to_kafka_producer() -> None:
    kwargs = KafkaConnection().kafka_producer_kwargs()
    assert kwargs["kafka_client"] is sender_client_class()
    assert "kafka_client" not in KafkaConnection().kafka_python_kwargs()  # consumers, admin: stock client


def test_reconnect_delay_is_the_managers_seconds_in_milliseconds() -> None:
    class Manager:
        def connection_delay(self, node_id):  # noqa: ANN001, ANN202
            return 0.25

    client = sender_client_class().__new__(sender_client_class())
    client._manager = Manager()
    assert client.connection_delay(1) == 250.0
