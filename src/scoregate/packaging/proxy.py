"""An HTTP reverse proxy on a stable port whose upstream can be switched without failing a request.

It runs as its own process (``python -m scoregate.packaging.proxy --listen PORT --state FILE``)
so it outlives the command that started it. The upstream is read from the JSON state file
(``{"upstream": "127.0.0.1:PORT", "generation": N}``, replaced atomically by the deployer)
and re-read when the file changes. The proxy's status is written to ``FILE.applied``
(``{"generation": N, "draining": ["127.0.0.1:OLD", ...], "port": P}``): the deployer knows
when new requests go to the new container, when the old one has no request left in
flight, and (after ``--listen 0``) which port the proxy took.

Why HTTP and not TCP: clients keep connections alive (every pooled HTTP client does). A TCP
proxy pins such a connection to the container it first reached, so the client keeps scoring
on the old version after a deploy and then sees its connection cut when that container stops.
Here clients keep their connections to the proxy; each *request* goes to the upstream that is
current when it arrives, over a pool per upstream. Requests in flight on the old upstream
finish there, and its pool is closed once the last one has.

uvicorn serves the clients and aiohttp talks to the upstreams (httpx's pool managed ~300
requests/s here, aiohttp's ~6,700); what is written here is the switching, which is the
product's own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

log = logging.getLogger("scoregate.proxy")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Connection-level headers (RFC 9110 section 7.6.1): they describe one hop, never forwarded.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
DEFAULT_TIMEOUT = 60.0
#: Idle upstream connections are dropped after this many seconds: sooner than the scoring
#: server's own keep-alive timeout (30 s), so the proxy never reuses one the server just closed.
UPSTREAM_KEEPALIVE = 10.0


class Upstream:
    """One upstream address with its connection pool and the requests in flight on it."""

    def __init__(self, address: str, timeout: float) -> None:
        self.address = address
        self.base = f"http://{address}"
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self.in_flight = 0
        self.retired = False

    @property
    def session(self) -> aiohttp.ClientSession:
        """Created on first use, inside the running loop (aiohttp binds a session to its loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout, connect=5.0),
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=UPSTREAM_KEEPALIVE),
                auto_decompress=False,  # bytes pass through as the upstream encoded them
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def close_when_idle(self) -> None:
        if self.retired and self.in_flight == 0:
            await self.close()


class SwitchableProxy:
    """ASGI app: forwards each request to the upstream current when it arrives."""

    def __init__(self, state: Path, *, timeout: float = DEFAULT_TIMEOUT, port: int | None = None) -> None:
        self.state = Path(state)
        self.timeout = timeout
        self.port = port
        self.upstream: Upstream | None = None
        self.generation = -1
        self._mtime = -1
        self._retiring: set[asyncio.Task[None]] = set()
        self._draining: list[Upstream] = []
        self._published: dict[str, Any] | None = None

    def reload(self) -> None:
        """Apply the state file if it changed; a missing or bad file keeps the current upstream."""
        try:
            stat = self.state.stat()
        except FileNotFoundError:
            return
        if stat.st_mtime_ns == self._mtime:
            return
        try:
            data = json.loads(self.state.read_text())
            address = str(data["upstream"])
            generation = int(data.get("generation", 0))
        except (OSError, ValueError, KeyError, TypeError):
            return  # the writer replaces the file atomically; a bad file keeps the current upstream
        self._mtime = stat.st_mtime_ns
        previous = self.upstream
        if previous is None or previous.address != address:
            self.upstream = Upstream(address, self.timeout)  # one assignment: a request sees old or new
            if previous is not None:
                previous.retired = True
                self._draining.append(previous)
                self._close_later(previous)
        self.generation = generation
        self.publish()

    def status(self) -> dict[str, Any]:
        """The generation applied and the old upstreams that still have requests in flight."""
        self._draining = [u for u in self._draining if u.in_flight > 0]
        draining = sorted(u.address for u in self._draining)
        return {"generation": self.generation, "draining": draining, "port": self.port}

    def publish(self) -> None:
        """Write the status next to the state file when it changed (atomically, like the state)."""
        status = self.status()
        if status == self._published:
            return
        applied = self.state.with_name(self.state.name + ".applied")
        partial = applied.with_name(applied.name + ".partial")
        partial.write_text(json.dumps(status))
        os.replace(partial, applied)
        self._published = status

    def _close_later(self, upstream: Upstream) -> None:
        """Close now if idle; otherwise the last request in flight on it closes it."""
        task = asyncio.get_running_loop().create_task(upstream.close_when_idle())
        self._retiring.add(task)  # held: the loop keeps only weak references to tasks
        task.add_done_callback(self._retiring.discard)

    async def watch(self, interval: float = 0.05) -> None:
        while True:
            self.reload()
            self.publish()
            await asyncio.sleep(interval)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._forward(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        watcher: asyncio.Task[None] | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.reload()
                watcher = asyncio.get_running_loop().create_task(self.watch())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if watcher is not None:
                    watcher.cancel()
                if self.upstream is not None:
                    await self.upstream.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        upstream = self.upstream
        if upstream is None:
            await _error(send, 503, "no_upstream", "the proxy has no upstream yet")
            return
        upstream.in_flight += 1
        try:
            target = scope["raw_path"] + (b"?" + scope["query_string"] if scope["query_string"] else b"")
            try:
                response = await upstream.session.request(
                    scope["method"],
                    URL(upstream.base + target.decode("latin-1"), encoded=True),
                    headers=_request_headers(scope),
                    data=await _body(receive),
                    allow_redirects=False,
                )
            except TimeoutError:
                await _error(send, 504, "upstream_timeout", f"{upstream.address} did not answer in time")
                return
            except aiohttp.ClientError as exc:
                await _error(send, 502, "bad_gateway", f"cannot reach {upstream.address}: {exc}")
                return
            try:
                headers = [(k, v) for k, v in response.raw_headers if k.lower() not in HOP_BY_HOP]
                await send({"type": "http.response.start", "status": response.status, "headers": headers})
                async for chunk in response.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except (TimeoutError, aiohttp.ClientError) as exc:  # cut short; the client sees that too
                log.warning("response from %s cut short: %s", upstream.address, exc)
            finally:
                response.release()
        finally:
            upstream.in_flight -= 1
            await upstream.close_when_idle()


def _request_headers(scope: Scope) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop ones and Host, plus where the request came from."""
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in HOP_BY_HOP]
    names = {k for k, _ in headers}
    forwarded = [(k, v) for k, v in headers if k not in ("host", "x-forwarded-for")]
    chain = [v for k, v in headers if k == "x-forwarded-for"]  # a balancer in front added its hops
    if client := scope.get("client"):
        chain.append(client[0])
    if chain:
        forwarded.append(("x-forwarded-for", ", ".join(chain)))
    if "x-forwarded-host" not in names and (host := dict(headers).get("host")):
        forwarded.append(("x-forwarded-host", host))
    if "x-forwarded-proto" not in names:
        forwarded.append(("x-forwarded-proto", scope.get("scheme", "http")))
    return forwarded


async def _body(receive: Receive) -> bytes | AsyncIterator[bytes]:
    """The client's body: bytes when it came in one piece (the usual scoring request), else a
    stream to the upstream as it arrives, so a large body is never held whole."""
    first = await receive()
    if first["type"] == "http.disconnect" or not first.get("more_body", False):
        return first.get("body", b"")

    async def rest() -> AsyncIterator[bytes]:
        yield first.get("body", b"")
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return

    return rest()


async def _error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"code": code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def listening_socket(host: str, port: int) -> socket.socket:
    """Bind before the state is applied: the ``.applied`` file then also means "listening".

    The protocol is named: asyncio's own loop turns Nagle's algorithm off only on sockets that
    say they are TCP (uvloop always does), and with it on, a response written in several
    pieces waits 40 ms for an ACK.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def serve(host: str, port: int, state: Path, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    import uvicorn

    sock = listening_socket(host, port)
    config = uvicorn.Config(
        SwitchableProxy(state, timeout=timeout, port=sock.getsockname()[1]),
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        proxy_headers=False,  # the client's address is the peer's; _request_headers extends the chain
        server_header=False,  # the upstream's own headers pass through
        date_header=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=int(timeout),
    )
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scoregate-proxy")
    parser.add_argument("--listen", type=int, required=True, help="port; 0 takes a free one (see the status)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds an upstream may take")
    args = parser.parse_args(argv)
    serve(args.host, args.listen, args.state, timeout=args.timeout)


if __name__ == "__main__":
    main()
