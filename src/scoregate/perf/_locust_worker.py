"""The load generator: Locust as a library, headless, in its own process.

Locust needs gevent's monkey-patching, which must happen before anything else is
imported, so the load test runs this module with ``python -m`` and a JSON config
file; it writes one JSON result file and exits. Every request is recorded (start
offset, latency, status, which body was sent); every ``sample_every``-th response
body is kept for the correctness check. A request that waits past ``timeout`` is recorded
as ``timeout: ...``; one still waiting when the run ends, and waiting already longer than the
latency budget, as ``unanswered: ...`` (Locust kills its greenlet, so it is recorded from the
in-flight table).
"""

from gevent import monkey

monkey.patch_all()

import itertools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from locust import FastHttpUser, constant_throughput, task  # noqa: E402
from locust.env import Environment  # noqa: E402


def main() -> None:
    with open(sys.argv[1]) as handle:
        config = json.load(handle)
    bodies = [b.encode() for b in config["bodies"]]
    path = config["path"]
    sample_every = max(int(config.get("sample_every", 10)), 1)
    timeout = float(config.get("timeout", 30.0))
    per_user = float(config["rps"]) / max(int(config["users"]), 1)
    counter = itertools.count()
    records: list[list] = []
    samples: dict[str, object] = {}
    in_flight: dict[int, tuple[float, float, int]] = {}  # n -> (offset, started, body index)
    state = {"start": None}

    class ScoringUser(FastHttpUser):
        host = config["host"]
        wait_time = constant_throughput(per_user)
        network_timeout = timeout
        connection_timeout = timeout

        @task
        def score(self) -> None:
            n = next(counter)
            index = n % len(bodies)
            offset = time.perf_counter() - state["start"]
            started = time.perf_counter()
            in_flight[n] = (offset, started, index)
            status = 0
            text = ""
            error = ""
            try:
                with self.client.post(
                    path, data=bodies[index], headers={"content-type": "application/json"}, catch_response=True
                ) as response:
                    status = response.status_code or 0
                    text = response.text or ""
                    if status != 200:
                        response.failure(f"HTTP {status}")
                        problem = getattr(response, "error", None)
                        error = _describe(problem, timeout) if problem is not None else text[:200]
            except Exception as exc:
                error = _describe(exc, timeout)
            del in_flight[n]
            latency_ms = (time.perf_counter() - started) * 1000.0
            ok = status == 200
            records.append([round(offset, 6), round(latency_ms, 4), int(ok), status, index, error])
            if ok and n % sample_every == 0:
                try:
                    samples[str(len(records) - 1)] = json.loads(text)
                except ValueError:
                    samples[str(len(records) - 1)] = {"unparsable": text[:200]}

    env = Environment(user_classes=[ScoringUser])
    runner = env.create_local_runner()
    state["start"] = time.perf_counter()
    wall_start = time.time()
    runner.start(int(config["users"]), spawn_rate=float(config.get("spawn_rate") or config["users"]))
    duration = float(config["duration_s"])

    def stop_at_deadline() -> None:
        # not gevent.spawn_later: the loop's cached clock is stale by the import time
        while time.perf_counter() - state["start"] < duration:
            gevent.sleep(min(0.05, max(duration - (time.perf_counter() - state["start"]), 0.001)))
        runner.quit()

    gevent.spawn(stop_at_deadline)
    runner.greenlet.join()
    # a request cut off by the end of the run says something only when it had already waited
    # longer than the latency budget; one sent an instant before the end is dropped, as Locust does
    ended = time.perf_counter()
    budget_s = float(config.get("budget_s", 0.0))
    for offset, started, index in sorted(in_flight.values()):
        waited = ended - started
        if waited > budget_s:
            error = f"unanswered: no answer after {waited:.3f} s, when the run ended"
            records.append([round(offset, 6), round(waited * 1000.0, 4), 0, 0, index, error])
    total = env.stats.total
    result = {
        "wall_start": wall_start,
        "elapsed_s": time.perf_counter() - state["start"],
        "records": records,
        "samples": samples,
        "locust": {"num_requests": total.num_requests, "num_failures": total.num_failures},
    }
    with open(config["result"], "w") as handle:
        json.dump(result, handle)


def _describe(error: BaseException, timeout: float) -> str:
    """The ``error`` column: ``timeout: ...`` for a request that waited past the timeout."""
    name = type(error).__name__
    if isinstance(error, (TimeoutError, gevent.Timeout)) or "timeout" in name.lower() or "timed out" in str(error):
        return f"timeout: no answer within {timeout:g} s ({name})"
    return f"{name}: {error}"[:300]


if __name__ == "__main__":
    main()
