"""Slow and greedy clients on a real socket: idle, slowloris headers, a trickled body, too many
connections, oversized headers, and a request sent on a kept-alive connection during drain."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import orjson
import pytest

from scoregate.serving import InMemorySource, create_app
from tests.serving.conftest import sample_rows

GOOD = sample_rows(400, seed=0)[0]
BODY = orjson.dumps({"rows": [GOOD]})
#: How long a test client keeps trying before it calls the server hung (a bound, not a timing).
PATIENCE = 30.0


def request(body: bytes = BODY, *, close: bool = False) -> bytes:
    head = (
        b"POST /models/credit@1/predict HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n%s\r\n" % (len(body), b"connection: close\r\n" if close else b"")
    )
    return head + body


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a hung server fails the test)."""
    chunks = []
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
    raise AssertionError(f"the server kept the connection open for {PATIENCE} s")


def read_response(sock: socket.socket) -> bytes:
    """One whole response (head and a ``content-length`` body), however the kernel splits it."""
    data = b""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        head, found, body = data.partition(b"\r\n\r\n")
        if found:
            lines = head.lower().split(b"\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in lines if line.startswith(b"content-length:")), 0)
            if len(body) >= length:
                return data
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"no whole response in {PATIENCE} s")


def trickle(sock: socket.socket, data: bytes, stop: threading.Event, every: float = 0.2) -> None:
    """Send ``data`` a byte at a time, as a slowloris client does, until the server closes."""
    for byte in data:
        if stop.is_set():
            return
        try:
            sock.send(bytes([byte]))
        except OSError:
            return
        time.sleep(every)


@pytest.fixture
def quick(source: InMemorySource, threaded: Any) -> Any:
    app = create_app(
        source, poll_interval=0.05, header_timeout=0.5, body_timeout=0.5, keep_alive_timeout=0.5, max_connections=50
    )
    return threaded(app)


def test_idle_slow_header_and_slow_body_connections_are_closed(quick: Any) -> None:
    idle = connect(quick.port)  # never sends a byte
    slow_head = connect(quick.port)
    slow_body = connect(quick.port)
    stop = threading.Event()
    head, body = request().split(b"\r\n\r\n", 1)
    slow_body.sendall(head + b"\r\n\r\n")  # headers at once, then the body a byte at a time
    threads = [
        threading.Thread(target=trickle, args=(slow_head, request(), stop), daemon=True),
        threading.Thread(target=trickle, args=(slow_body, body, stop), daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        assert read_until_closed(idle) == b""
        assert read_until_closed(slow_head).startswith(b"HTTP/1.1 408 ")
        assert read_until_closed(slow_body).startswith(b"HTTP/1.1 408 ")
    finally:
        stop.set()
        for sock in (idle, slow_head, slow_body):
            sock.close()
    # a client that is merely kept alive between requests is closed after the keep-alive timeout
    alive = connect(quick.port)
    alive.sendall(request())
    answer = read_until_closed(alive)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1") == 1
    alive.close()


def test_headers_are_bounded(quick: Any) -> None:
    sock = connect(quick.port)
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: test\r\n" + b"x-pad: " + b"a" * 64_000 + b"\r\n\r\n")
    assert read_until_closed(sock).startswith(b"HTTP/1.1 400 ")
    sock.close()


def test_connections_per_worker_are_capped(source: InMemorySource, threaded: Any) -> None:
    server = threaded(create_app(source, max_connections=2, keep_alive_timeout=60, header_timeout=60))
    held = [connect(server.port), connect(server.port)]
    try:
        for sock in held:  # both are served
            sock.sendall(request())
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        third = connect(server.port)
        answer = read_until_closed(third)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"too_many_connections" in answer
        third.close()
    finally:
        for sock in held:
            sock.close()


def test_a_request_on_a_kept_alive_connection_during_drain_is_answered(source: InMemorySource, threaded: Any) -> None:
    server = threaded(create_app(source, keep_alive_timeout=20))
    sock = connect(server.port)
    sock.sendall(request())
    assert read_response(sock).startswith(b"HTTP/1.1 200 ")  # now idle and kept alive
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:  # the drain has begun once the port refuses new connections
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
        except OSError:
            break
        time.sleep(0.02)
    sock.sendall(request())
    answer = read_until_closed(sock)
    sock.close()
    stopper.join(PATIENCE)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert b"connection: close" in answer.lower()
    assert not server.thread.is_alive()
