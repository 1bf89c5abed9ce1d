"""The load generator: Locust as a library, headless, in its own process.

Locust needs gevent's monkey-patching, which must happen before anything else is
imported, so the load test runs this module with ``python -m`` and a JSON config
file; it writes one JSON result file and exits. Every request is recorded (start
offset, latency, status, which body was sent); every ``sample_every``-th response
body is kept for the correctness check.
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
                        error = text[:200]
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
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


if __name__ == "__main__":
    main()
