"""The HTTP protocol the server runs: uvicorn's httptools protocol with the bounds it lacks.

uvicorn closes a connection that stays idle after a response (``timeout_keep_alive``)
but bounds nothing else: a connection that never sends a byte, headers sent a byte a
second (slowloris), a body that trickles in, all were held as long as the client
liked. This subclass adds, from the app's :class:`~scoregate.serving.options.ServeOptions`:

* an idle timeout before the first request (``keep_alive_timeout``, as between requests),
* ``header_timeout`` from a request's first byte to the end of its headers, and at most
  ``MAX_HEADER_BYTES`` of request line and headers,
* ``body_timeout`` from the end of the headers to the end of the body (in all, not per
  chunk, so a trickle cannot reset it),
* ``max_connections`` open connections per worker (at most the file limit less a few); the
  next gets 503 and is closed.

A request that runs out of time gets 408 (when no response has started) and the
connection is closed. And a graceful drain answers instead of resetting: on shutdown
uvicorn closes idle kept-alive connections at once, so a request a client had already
sent on one was reset; here an idle connection stays open until its keep-alive timeout,
and a request arriving on it meanwhile is answered with ``Connection: close``.

Written by hand because uvicorn has no such options for httptools (its h11 protocol is
several times slower) and the checks must live where the bytes arrive.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from scoregate.serving.options import ServeOptions

log = logging.getLogger("scoregate.serving")

MAX_HEADER_BYTES = 32 * 1024
#: File descriptors kept for everything but connections (models, the log, the registry).
SPARE_FDS = 64


def _fd_limit() -> int:
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # pragma: no cover - not on Linux
        return 1 << 30
    return soft if soft != resource.RLIM_INFINITY else 1 << 30


#: A connection cap above the process's file limit would fail accept() instead of answering 503.
_CONNECTIONS_POSSIBLE = max(1, _fd_limit() - SPARE_FDS)


def _canned(status: bytes, code: str, message: str) -> bytes:
    body = b'{"error":"%s","message":"%s"}' % (code.encode(), message.encode())
    return b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (
        status,
        len(body),
        body,
    )


_TIMEOUT = _canned(b"408 Request Timeout", "request_timeout", "the request was not received in time")
_FULL = _canned(b"503 Service Unavailable", "too_many_connections", "this worker has too many open connections")


def _options(config: Any) -> ServeOptions:
    """The options of the app uvicorn serves (unwrapping any middleware), or the defaults."""
    app = getattr(config, "loaded_app", None)
    for _ in range(8):
        options = getattr(app, "options", None)
        if isinstance(options, ServeOptions):
            return options
        app = getattr(app, "app", None)
        if app is None:
            break
    return ServeOptions()


class _HeaderTooLarge(Exception):
    pass


class ScoringProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        options = _options(config)
        self._header_timeout = options.header_timeout
        self._body_timeout = options.body_timeout
        self._idle_timeout = options.keep_alive_timeout
        self._max_connections = min(options.max_connections, _CONNECTIONS_POSSIBLE)
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._draining = False

    # --- timers ------------------------------------------------------------------------------

    def _arm(self, seconds: float, callback: Any) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _close_idle(self) -> None:
        self._deadline = None
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self.transport.close()

    def _slow_headers(self) -> None:
        """A request's headers not received in time: 408, then close."""
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.write(_TIMEOUT)
            self.transport.close()

    def _slow_body(self) -> None:
        """A request's body not received in time: 408 unless the app already answered, then close."""
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            self.transport.write(_TIMEOUT)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() gets http.disconnect
            cycle.message_event.set()
        self.transport.close()

    # --- protocol events -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            log.warning("refusing a connection: %d open (--max-connections)", len(self.connections) - 1)
            transport.write(_FULL)
            transport.close()
            return
        self._arm(self._idle_timeout, self._close_idle)  # until the first request begins

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._arm(self._header_timeout, self._slow_headers)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEADER_BYTES:
            raise _HeaderTooLarge  # the parser reports it; uvicorn answers 400 and closes

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False
        self._arm(self._body_timeout, self._slow_body)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def shutdown(self) -> None:
        """Graceful drain: finish what is in flight; keep an idle connection for a request already
        on its way (answered with Connection: close) until its keep-alive timeout."""
        self._draining = True
        if self.cycle is None or self.cycle.response_complete:
            if self.timeout_keep_alive_task is None and self._deadline is None:
                self._arm(self._idle_timeout, self._close_idle)
        else:
            self.cycle.keep_alive = False


__all__ = ["MAX_HEADER_BYTES", "ScoringProtocol"]
