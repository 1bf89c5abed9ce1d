"""The worker process that runs model code: results, errors, and stops at the deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from scoregate import isolation
from scoregate.errors import FlavorError, ModelTimeoutError, ScoregateError


def echo(payload: Any, progress: isolation.Progress) -> Any:
    return payload, os.getpid()


def sleeps_after_ticks(payload: Any, progress: isolation.Progress) -> None:
    progress.on_stop(lambda: {"done": payload})
    for _ in range(payload):
        progress.tick()
    time.sleep(10**6)


def spins_in_c(payload: Any, progress: isolation.Progress) -> None:
    import itertools

    progress.tick()
    sum(itertools.count())  # holds the interpreter lock; no signal handler runs in it


def starts_a_sleeping_child(payload: str, progress: isolation.Progress) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(10**6)"])
    Path(payload).write_text(str(child.pid))
    time.sleep(10**6)


def raises(payload: Any, progress: isolation.Progress) -> None:
    if payload == "flavor":
        raise FlavorError("the flavor refused")

    class Local(Exception):  # a class the caller cannot unpickle
        pass

    raise Local("a local error\nwith a second line")


def exits(payload: Any, progress: isolation.Progress) -> None:
    os._exit(3)


def test_a_call_returns_and_reuses_its_worker() -> None:
    value, pid = isolation.call("tests.test_isolation:echo", {"a": [1, 2]}, timeout=60)
    assert value == {"a": [1, 2]} and pid != os.getpid()
    assert isolation.call("tests.test_isolation:echo", "again", timeout=60)[1] == pid


def test_errors_come_back_as_errors_and_the_worker_survives() -> None:
    with pytest.raises(FlavorError, match="the flavor refused"):
        isolation.call("tests.test_isolation:raises", "flavor", timeout=60)
    with pytest.raises(ScoregateError, match=r"the toy failed: Local: a local error$"):
        isolation.call("tests.test_isolation:raises", "local", timeout=60, what="the toy")
    _, pid = isolation.call("tests.test_isolation:echo", None, timeout=60)
    with pytest.raises(ScoregateError, match="the process running the toy exited with code 3"):
        isolation.call("tests.test_isolation:exits", None, timeout=60, what="the toy")
    assert isolation.call("tests.test_isolation:echo", None, timeout=60)[1] != pid


def test_a_stall_stops_the_worker_and_hands_back_the_partial_result() -> None:
    _, pid = isolation.call("tests.test_isolation:echo", None, timeout=60)
    with pytest.raises(ModelTimeoutError, match="the toy did not answer within 1 s") as caught:
        isolation.call("tests.test_isolation:sleeps_after_ticks", 3, timeout=60, stall=1, what="the toy")
    assert caught.value.ticks == 3 and caught.value.stalled and caught.value.partial == {"done": 3}
    assert caught.value.status_code == 504
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the worker that hung was killed, not left running


@pytest.mark.timeout(60)
def test_a_model_holding_the_interpreter_lock_in_c_is_killed_at_the_timeout() -> None:
    with pytest.raises(ModelTimeoutError, match="within 1 s") as caught:
        isolation.call("tests.test_isolation:spins_in_c", None, timeout=1, what="the toy")
    assert caught.value.partial is None and not caught.value.stalled and caught.value.ticks == 1


def test_the_stop_kills_what_the_model_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    with pytest.raises(ModelTimeoutError):
        isolation.call("tests.test_isolation:starts_a_sleeping_child", str(pid_file), timeout=3)
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        # a killed child not yet reaped by its (dead) parent is a zombie: gone for our purpose
        if Path(f"/proc/{child}/stat").read_text().split(")")[1].split()[0] == "Z":
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the model's own child process outlived the stop")


def test_a_forked_child_leaves_the_parents_worker_alone() -> None:
    _, pid = isolation.call("tests.test_isolation:echo", None, timeout=60)
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        code = 0
        try:
            _, other = isolation.call("tests.test_isolation:echo", None, timeout=60)
            code = 0 if other != pid else 1
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert isolation.call("tests.test_isolation:echo", None, timeout=60)[1] == pid  # still the parent's
