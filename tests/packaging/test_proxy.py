"""The deploy proxy, against real uvicorn upstreams on loopback (no containers needed)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from scoregate.packaging.service import _proxy_status, _wait_drained
from tests.serving.conftest import ThreadedServer, free_port, wait_for


class Gate:
    """Holds an upstream's ``/slow`` requests: ``started`` once one arrives, until ``release``."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()


def echo_app(name: str, gate: Gate) -> Any:
    """An upstream that says who it is and what it received; ``/slow`` waits for its gate."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/slow":
            gate.started.set()
            await asyncio.get_running_loop().run_in_executor(None, gate.release.wait, 20)
        answer = {
            "upstream": name,
            "method": scope["method"],
            "path": scope["raw_path"].decode(),
            "query": scope["query_string"].decode(),
            "body": body[:100].decode(errors="replace"),
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
        }
        payload = json.dumps(answer).encode()
        status = 422 if scope["path"] == "/bad" else 200
        headers = [(b"content-type", b"application/json"), (b"x-served-by", name.encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app


class Proxy:
    """The real proxy process, on a free port, driven through its state file."""

    def __init__(self, tmp_path: Path, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self.state = tmp_path / "state.json"
        self.port = 0  # the proxy takes a free port itself and reports it: no race with other binds
        self.generation = 0
        self.process: subprocess.Popen[bytes] | None = None

    def point_at(self, upstream: ThreadedServer | str) -> None:
        address = upstream if isinstance(upstream, str) else f"127.0.0.1:{upstream.port}"
        self.generation += 1
        partial = self.state.with_suffix(".partial")
        partial.write_text(json.dumps({"upstream": address, "generation": self.generation}))
        os.replace(partial, self.state)
        if self.process is None:
            command = [sys.executable, "-m", "scoregate.packaging.proxy", "--listen", "0"]
            options = ["--state", str(self.state), "--timeout", str(self.timeout)]
            self.process = subprocess.Popen([*command, *options])
        deadline = time.monotonic() + 20
        while self.status()["generation"] < self.generation:
            assert time.monotonic() < deadline, "the proxy did not apply the state"
            assert self.process.poll() is None, "the proxy exited"
            time.sleep(0.02)
        self.port = self.status()["port"]

    def status(self) -> dict[str, Any]:
        return _proxy_status(self.state)  # what `deploy` reads

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(20)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    proxy = Proxy(tmp_path)
    yield proxy
    proxy.stop()


class Upstream(ThreadedServer):
    def __init__(self, name: str) -> None:
        self.gate = Gate()
        super().__init__(echo_app(name, self.gate))

    def stop(self) -> None:
        self.gate.release.set()
        super().stop()


@pytest.fixture
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    with Upstream("a") as a, Upstream("b") as b:
        yield a, b


def test_a_request_passes_through_unchanged(proxy: Proxy, upstreams: Any) -> None:
    proxy.point_at(upstreams[0])
    response = httpx.post(
        f"{proxy.url}/models/credit%40production/predict?explain=1&x=a%20b",
        content=b'{"rows": []}',
        headers={"x-request-id": "abc", "content-type": "application/json", "x-forwarded-for": "10.0.0.7"},
    )
    assert response.status_code == 200
    assert response.headers["x-served-by"] == "a"
    seen = response.json()
    assert seen["method"] == "POST"
    assert seen["path"] == "/models/credit%40production/predict"
    assert seen["query"] == "explain=1&x=a%20b"
    assert seen["body"] == '{"rows": []}'
    assert seen["headers"]["x-request-id"] == "abc"
    assert seen["headers"]["x-forwarded-for"] == "10.0.0.7, 127.0.0.1"  # the chain, extended
    assert seen["headers"]["x-forwarded-host"] == f"127.0.0.1:{proxy.port}"
    bad = httpx.get(f"{proxy.url}/bad")
    assert bad.status_code == 422 and bad.json()["upstream"] == "a"  # the upstream's status, not the proxy's


def test_a_kept_alive_client_follows_the_switch_and_never_fails(proxy: Proxy, upstreams: Any) -> None:
    a, b = upstreams
    proxy.point_at(a)
    seen: list[str | None] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as client:  # one pooled connection, as real clients keep
            while not stop.is_set():
                try:
                    seen.append(client.post(f"{proxy.url}/predict", json={"rows": [1]}).json()["upstream"])
                except httpx.HTTPError as exc:
                    seen.append(f"failed: {exc!r}")

    with httpx.Client(timeout=10) as slow_client:
        worker = threading.Thread(target=load)
        worker.start()
        try:
            wait_for(lambda: len(seen) >= 5)
            in_flight: list[str] = []
            slow = threading.Thread(target=lambda: in_flight.append(slow_client.get(f"{proxy.url}/slow").text))
            slow.start()
            assert a.gate.started.wait(10)  # the slow request is on a
            proxy.point_at(b)
            switched_at = len(seen)
            wait_for(lambda: len(seen) >= switched_at + 5)
            a.gate.release.set()
            slow.join(10)
            a.stop()  # the old upstream goes away, as the old container does after a deploy
            stopped_at = len(seen)
            wait_for(lambda: len(seen) >= stopped_at + 5)
        finally:
            stop.set()
            worker.join(10)
    failures = [s for s in seen if s not in ("a", "b")]
    assert not failures, failures[:3]
    assert "a" in seen[:switched_at] and seen[-1] == "b"
    assert seen == sorted(seen), "a request went back to the old upstream after the switch"
    assert set(seen[switched_at + 1 :]) == {"b"}  # at most the request in flight at the switch ends on a
    assert json.loads(in_flight[0])["upstream"] == "a"  # in flight at the switch: finished where it started


def test_an_unreachable_upstream_is_a_502_naming_it(proxy: Proxy) -> None:
    dead = f"127.0.0.1:{free_port()}"
    proxy.point_at(dead)
    response = httpx.get(f"{proxy.url}/v2/health/live")
    assert response.status_code == 502
    assert response.json()["code"] == "bad_gateway" and dead in response.json()["message"]


def test_a_bad_state_file_keeps_the_current_upstream(proxy: Proxy, upstreams: Any) -> None:
    proxy.point_at(upstreams[0])
    proxy.state.write_text("{not json")
    time.sleep(0.3)  # several reload intervals
    assert httpx.get(f"{proxy.url}/x").json()["upstream"] == "a"
    proxy.state.write_text(json.dumps({"generation": 99}))  # no upstream
    time.sleep(0.3)
    assert httpx.get(f"{proxy.url}/x").json()["upstream"] == "a"
    assert proxy.process is not None and proxy.process.poll() is None


def test_large_and_chunked_bodies_stream_through_intact(proxy: Proxy, upstreams: Any) -> None:
    proxy.point_at(upstreams[0])
    payload = os.urandom(3 * 1024 * 1024)
    sized = httpx.post(f"{proxy.url}/upload", content=payload, timeout=30).json()
    assert (sized["size"], sized["sha256"]) == (len(payload), hashlib.sha256(payload).hexdigest())

    def pieces() -> Iterator[bytes]:  # no length known up front: sent chunked
        for start in range(0, len(payload), 256 * 1024):
            yield payload[start : start + 256 * 1024]

    chunked = httpx.post(f"{proxy.url}/upload", content=pieces(), timeout=30).json()
    assert (chunked["size"], chunked["sha256"]) == (len(payload), hashlib.sha256(payload).hexdigest())


def test_a_slow_upstream_is_a_504_and_the_proxy_keeps_serving(tmp_path: Path, upstreams: Any) -> None:
    proxy = Proxy(tmp_path, timeout=0.2)
    try:
        proxy.point_at(upstreams[0])
        response = httpx.get(f"{proxy.url}/slow")  # held at the upstream
        assert response.status_code == 504 and response.json()["code"] == "upstream_timeout"
        upstreams[0].gate.release.set()
        assert httpx.get(f"{proxy.url}/x").json()["upstream"] == "a"
    finally:
        proxy.stop()


def test_image_run_without_aiohttp_says_which_extra_before_starting_anything(monkeypatch: Any) -> None:
    import importlib.util

    from scoregate.packaging import service
    from scoregate.packaging.engine import EngineError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "aiohttp" else real(name, *a))
    with pytest.raises(EngineError, match=r"scoregate\[deploy\]"):
        service.run_image(object(), "credit-risk@1", engine=object())  # neither is touched


def test_the_status_names_an_old_upstream_until_its_last_request_finishes(proxy: Proxy, upstreams: Any) -> None:
    a, b = upstreams
    proxy.point_at(a)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(httpx.get, f"{proxy.url}/slow", timeout=10)
        assert a.gate.started.wait(10)  # on a now, and held there
        proxy.point_at(b)
        assert proxy.status() == {"generation": 2, "draining": [f"127.0.0.1:{a.port}"], "port": proxy.port}
        time.sleep(0.2)  # several status intervals: still in flight, still draining
        assert proxy.status()["draining"] == [f"127.0.0.1:{a.port}"]
        a.gate.release.set()
        assert slow.result().json()["upstream"] == "a"
    wait_for(lambda: not proxy.status()["draining"])
    proxy.point_at(a)  # back again: nothing in flight on b, so nothing to drain
    assert proxy.status() == {"generation": 3, "draining": [], "port": proxy.port}


def test_deploy_waits_for_the_old_upstream_to_drain_at_most_the_drain_time(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    applied = tmp_path / "state.json.applied"

    def publish(text: str) -> None:  # atomically, as the proxy does
        partial = tmp_path / "applied.partial"
        partial.write_text(text)
        os.replace(partial, applied)

    publish(json.dumps({"generation": 2, "draining": ["127.0.0.1:1"]}))
    started = time.monotonic()
    assert _wait_drained(state, "127.0.0.1:1", 0.3) is False
    assert time.monotonic() - started >= 0.3
    drained = threading.Timer(0.2, publish, args=(json.dumps({"generation": 2, "draining": []}),))
    drained.start()
    assert _wait_drained(state, "127.0.0.1:1", 10) is True
    drained.join()
    assert _wait_drained(state, "127.0.0.1:2", 0) is True  # never draining: no wait
    publish("7")  # what a proxy of an earlier release, still running, writes
    assert _proxy_status(state) == {"generation": 7, "draining": []}
