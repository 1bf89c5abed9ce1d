"""Benchmark of the deploy proxy (``scoregate.packaging.proxy``): what a hop through it costs.

Starts a stand-in upstream (uvicorn answering every POST with a fixed scoring-shaped JSON
body, so the figures are the proxy's and not a model's) and the proxy in front of it, then
drives both with wrk on loopback, one kept-alive connection per wrk connection, at 1 and 32
connections. Prints req/s and p50/p99 for each, and the ratios measured in this run.

    .venv/bin/python benchmarks/proxy.py [--duration 10] [--connections 1,32]

Needs ``wrk`` on PATH (``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scoregate.packaging.engine import free_port

LUA = r"""
request = function()
  return wrk.format("POST", "/models/bench@production/predict", {["Content-Type"] = "application/json"},
    '{"rows": [{"f0": 0.1, "f1": 0.2, "f2": 0.3}]}')
end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT requests=%d duration_us=%d errors=%d p50=%d p99=%d\n",
    summary.requests, summary.duration, errors, latency:percentile(50), latency:percentile(99)))
end
"""
ANSWER = json.dumps(
    {"model": "bench", "version": 1, "request_id": "0" * 32, "predictions": [{"label": 1, "proba_1": 0.73}]}
).encode()


async def upstream_app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


def wait_listening(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def wrk(script: Path, port: int, conns: int, seconds: int) -> tuple[float, float, float, int]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-s", str(script), f"http://127.0.0.1:{port}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"RESULT requests=(\d+) duration_us=(\d+) errors=(\d+) p50=(\d+) p99=(\d+)", out)
    if match is None:
        raise RuntimeError(f"could not parse wrk output:\n{out}")
    requests, duration, errors, p50, p99 = map(int, match.groups())
    return requests / (duration / 1e6), p50 / 1e3, p99 / 1e3, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", default="1,32")
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)  # internal: run the stand-in upstream
    args = parser.parse_args()
    if args.upstream:
        import uvicorn

        uvicorn.run(upstream_app, host="127.0.0.1", port=args.upstream, log_level="warning", access_log=False)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")

    work = Path(tempfile.mkdtemp(prefix="scoregate-proxy-bench-"))
    script = work / "post.lua"
    script.write_text(LUA)
    upstream_port, proxy_port = free_port(), free_port()
    (work / "state.json").write_text(json.dumps({"upstream": f"127.0.0.1:{upstream_port}", "generation": 1}))
    proxy = ["-m", "scoregate.packaging.proxy", "--listen", str(proxy_port), "--state", str(work / "state.json")]
    processes = [
        subprocess.Popen([sys.executable, __file__, "--upstream", str(upstream_port)], start_new_session=True),
        subprocess.Popen([sys.executable, *proxy], start_new_session=True),
    ]
    try:
        wait_listening(upstream_port)
        wait_listening(proxy_port)
        wrk(script, proxy_port, 8, 2)  # warm both
        print("conns  target        req/s   p50 ms   p99 ms errors")
        for conns in [int(c) for c in args.connections.split(",")]:
            direct = wrk(script, upstream_port, conns, args.duration)
            proxied = wrk(script, proxy_port, conns, args.duration)
            for name, (rps, p50, p99, errors) in (("upstream", direct), ("proxy", proxied)):
                print(f"{conns:>5}  {name:<10} {rps:>9.0f} {p50:>8.3f} {p99:>8.3f} {errors:>6}")
            print(
                f"{conns:>5}  through the proxy: req/s {proxied[0] / direct[0]:.2f}x, "
                f"+{proxied[1] - direct[1]:.3f} ms at p50, +{proxied[2] - direct[2]:.3f} ms at p99"
            )
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)


if __name__ == "__main__":
    main()
