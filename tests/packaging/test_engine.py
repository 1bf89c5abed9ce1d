"""Engine detection asks the engine: a docker client with no daemon behind it is not an engine.

No container is run: the engines here are stub scripts on a PATH of their own."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from scoregate.errors import ScoregateError
from scoregate.packaging import Engine

DEMO = Path(__file__).resolve().parents[2] / "examples" / "credit_risk"
NO_DAEMON = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"


def stub(folder: Path, name: str, *, info: str) -> Path:
    """An engine whose ``info`` fails (``info="fail"``), hangs (``"hang"``) or works (``"ok"``)."""
    folder.mkdir(exist_ok=True)
    answers = {
        "fail": f"echo '{NO_DAEMON}' >&2; exit 1",
        "hang": f"exec {shutil.which('sleep')} 60",
        "ok": "echo 'host: ok'; exit 0",
    }
    path = folder / name
    path.write_text(f'#!/bin/sh\ncase " $* " in *" info "*) {answers[info]} ;; esac\nexit 0\n')
    path.chmod(0o755)
    return path


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding only the stubs (and, for the demo's script, the few tools it uses)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("timeout", "tr", "cut", "sleep"):
        (folder / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.delenv("SCOREGATE_CONTAINER_ENGINE", raising=False)
    return folder


def test_a_docker_client_without_a_daemon_is_not_an_engine(bin_dir: Path) -> None:
    stub(bin_dir, "docker", info="fail")
    with pytest.raises(ScoregateError) as caught:
        Engine.detect()
    message = caught.value.message
    assert message.startswith("no working container engine: docker (") and "does not answer" in message
    assert NO_DAEMON in message and "\n" not in message
    assert caught.value.status_code == 503


def test_the_first_engine_that_answers_is_the_one(bin_dir: Path) -> None:
    stub(bin_dir, "podman", info="fail")
    stub(bin_dir, "docker", info="ok")
    assert Engine.detect().kind == "docker"
    stub(bin_dir, "podman", info="ok")
    found = Engine.detect()
    assert found.kind == "podman" and found.runtime == "runc"


def test_an_engine_that_hangs_is_given_up_at_the_probe_timeout(bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("scoregate.packaging.engine.PROBE_TIMEOUT_S", 1.0)
    stub(bin_dir, "docker", info="hang")
    with pytest.raises(ScoregateError, match=r"docker \(.*\) did not answer `docker info` within 1 s"):
        Engine.detect()


def test_image_build_says_in_one_line_which_engine_does_not_answer(run, bin_dir: Path) -> None:  # type: ignore[no-untyped-def]
    stub(bin_dir, "docker", info="fail")
    code, out, err = run("image", "build", "credit@1")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 6 and len(lines) == 1, (code, out, err)
    assert "no working container engine: docker" in lines[0] and "Cannot connect to the Docker daemon" in lines[0]


def _detect_as_the_demo_does(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(DEMO / "container_engine.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )


def test_the_demo_skips_containers_when_no_engine_answers(bin_dir: Path) -> None:
    found = _detect_as_the_demo_does({})
    assert (
        found.returncode == 1 and found.stdout == "no podman or docker installed (.ci/containers.sh installs podman)\n"
    )
    stub(bin_dir, "docker", info="fail")
    found = _detect_as_the_demo_does({})
    assert found.returncode == 1 and found.stdout.count("\n") == 1, found
    assert found.stdout.startswith("no working container engine: docker does not answer") and NO_DAEMON in found.stdout
    stub(bin_dir, "podman", info="hang")
    found = _detect_as_the_demo_does({"SCOREGATE_ENGINE_PROBE_SECONDS": "1"})
    assert found.returncode == 1
    assert found.stdout.startswith("no working container engine: podman did not answer 'podman info' within 1 s; ")
    # and demo.sh takes its container step from that script, not from what is on PATH
    demo = (DEMO / "demo.sh").read_text()
    assert 'engine=$(bash "$here/container_engine.sh")' in demo and "command -v docker" not in demo


def test_the_demo_uses_the_engine_that_answers(bin_dir: Path) -> None:
    stub(bin_dir, "podman", info="fail")
    stub(bin_dir, "docker", info="ok")
    found = _detect_as_the_demo_does({})
    assert (found.returncode, found.stdout) == (0, "docker\n")
