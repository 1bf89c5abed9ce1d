"""Build, test, run and deploy a model version's OCI image.

* :func:`build_image` generates the context (:mod:`scoregate.packaging.context`), builds it
  with ``--network none`` and records the image as evidence kind ``image``.
* :func:`test_image` starts the image, runs the validation suite (cases + parity with the
  reference scorer in a separate process) against it over HTTP, stops it and attaches
  the report as ``validation`` evidence.
* :func:`run_image` starts a container behind a stable port (the switchable proxy).
* :func:`deploy` starts the new version beside the current one, waits for health, checks
  parity, switches the proxy's upstream, then stops the old container.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from scoregate.errors import ConflictError, NotFoundError, ScoregateError
from scoregate.governance.access import Permission
from scoregate.packaging.context import DEFAULT_BASE, BuildContext, build_context, canonical, image_tag
from scoregate.packaging.engine import Engine, EngineError, free_port, wait_ready


@dataclass
class BuiltImage:
    ref: str
    tag: str
    image_id: str
    image_digest: str
    base: str
    context: Path
    labels: dict[str, str]
    context_digest: str
    seconds: float
    evidence: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {
            "kind": "image",
            "model": self.ref,
            "image_id": self.image_id,
            "image_digest": self.image_digest,
            "tag": self.tag,
            "base": self.base,
            "labels": self.labels,
            "context_digest": self.context_digest,
            "artifact_digest": self.labels.get("scoregate.artifact.digest", "").removeprefix("sha256:"),
        }


def build_image(
    registry: Any,
    ref: str,
    *,
    base: str = DEFAULT_BASE,
    tag: str | None = None,
    engine: Engine | None = None,
    record: bool = True,
) -> BuiltImage:
    from scoregate.governance.service import Governance

    engine = engine or Engine.detect()
    started = time.perf_counter()
    ctx: BuildContext = build_context(registry, ref, base=base, tag=tag)
    image_id = engine.build(str(ctx.path), ctx.tag, log=ctx.path.parent / f"{ctx.path.name}.build.log")
    image_digest = str(engine.inspect_image(ctx.tag).get("Digest") or "")
    built = BuiltImage(
        ref=ctx.ref,
        tag=ctx.tag,
        image_id=image_id,
        image_digest=image_digest,
        base=base,
        context=ctx.path,
        labels=engine.image_labels(ctx.tag) or ctx.labels,
        context_digest=ctx.files_digest(),
        seconds=time.perf_counter() - started,
        notes=ctx.notes,
    )
    if record:
        try:
            built.evidence = Governance(registry).record_run(
                ctx.ref, "image", built.document(), name=f"image-{image_id[:12]}.json"
            )
        except ConflictError:  # the same image, already recorded
            built.evidence = None
    return built


def _container_name(name: str, version: int, purpose: str) -> str:
    return f"scoregate-{canonical(name)}-{version}-{purpose}"


@dataclass
class Running:
    ref: str
    image: str
    container: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_container(
    engine: Engine, ref: str, image: str, purpose: str, *, port: int | None = None, timeout: float = 120.0
) -> Running:
    name, _, version = ref.partition("@")
    container = _container_name(name, int(version), purpose)
    port = port or free_port()
    engine.start(image, name=container, host_port=port)
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout=timeout, engine=engine, name=container)
    except ScoregateError:
        engine.remove(container)
        raise
    return Running(ref, image, container, port)


def _resolve_image(engine: Engine, version: Any, image: str | None) -> str:
    image = image or image_tag(version.name, version.version)
    if not engine.image_exists(image):
        raise NotFoundError(f"image {image} does not exist: run `scoregate image build {version.ref}` first")
    return image


def validate_running(registry: Any, version: Any, url: str, *, seed: int = 0, timeout: float = 10.0) -> Any:
    from scoregate.validation import HttpTarget, validate

    target = HttpTarget(url, version.name, version.version, version.input_schema, protocol="json")
    try:
        return validate(registry, version.ref, target=target, seed=seed, timeout=timeout)
    finally:
        target.close()


@dataclass
class ImageTestResult:
    ref: str
    image: str
    report: Any
    labels_match: bool
    label_problem: str | None
    evidence: dict[str, Any] | None
    measured: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return bool(self.report.passed) and self.labels_match


def test_image(
    registry: Any,
    ref: str,
    *,
    image: str | None = None,
    engine: Engine | None = None,
    record: bool = True,
    seed: int = 0,
) -> ImageTestResult:
    """Start the image, run the validation suite + parity against it, stop it."""
    from scoregate.governance.service import Governance

    engine = engine or Engine.detect()
    version = registry.resolve(ref)
    image = _resolve_image(engine, version, image)
    labels = engine.image_labels(image)
    expected = f"sha256:{version.artifact_digest}"
    problem = None
    if labels.get("scoregate.artifact.digest") != expected:
        problem = (
            f"image label scoregate.artifact.digest is {labels.get('scoregate.artifact.digest')!r}, "
            f"the version's artifact is {expected}"
        )
    running = start_container(engine, version.ref, image, "test")
    try:
        report = validate_running(registry, version, running.url, seed=seed)
        measured = measure_container(engine, running.container)
    finally:
        engine.remove(running.container)
    report.target = f"image {image}: {report.target}"
    document = report.to_dict()
    document["image"] = {"tag": image, "labels": labels, "label_problem": problem}
    if measured:
        document["container"] = measured
    evidence = None
    if record:
        evidence = Governance(registry).record_run(
            version.ref, "validation", document, name=f"image-validation-{version.version}.json"
        )
    return ImageTestResult(version.ref, image, report, problem is None, problem, evidence, measured)


def measure_container(engine: Engine, container: str) -> dict[str, Any] | None:
    """Peak and current resident memory of the server process (PID 1) after the suite ran.

    Read from ``/proc/1/status`` inside the container: it works whatever the cgroup setup
    (``stats`` needs cgroup accounting, which rootful podman on cgroupfs v1 may not report).
    """
    proc = engine.run("exec", container, "cat", "/proc/1/status", check=False, timeout=30)
    if proc.returncode != 0:
        return None
    fields = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS") and value.strip().endswith("kB"):
            fields[key] = int(value.strip().split()[0]) * 1024
    if "VmHWM" not in fields:
        return None
    return {"peak_rss_bytes": fields["VmHWM"], "rss_bytes": fields.get("VmRSS"), "source": "/proc/1/status"}


# -- running behind a stable port ----------------------------------------------------------------


def _deploy_dir(registry: Any) -> Path:
    folder = Path(registry.settings.home) / "deployments"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _state_path(registry: Any, name: str) -> Path:
    return _deploy_dir(registry) / f"{canonical(name)}.json"


def read_state(registry: Any, name: str) -> dict[str, Any] | None:
    path = _state_path(registry, name)
    return json.loads(path.read_text()) if path.is_file() else None


def _write_state(path: Path, state: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(partial, path)


def _proxy_alive(state: dict[str, Any]) -> bool:
    """The state's proxy process is running (not a zombie, and the pid is still our proxy)."""
    pid = state.get("proxy_pid")
    if not pid:
        return False
    proc = Path(f"/proc/{int(pid)}")
    if proc.is_dir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            status = (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            return False
        return b"scoregate.packaging.proxy" in cmdline and status != "Z"
    try:
        os.kill(int(pid), 0)  # no /proc (macOS): existence only
    except OSError:
        return False
    return True


def _start_proxy(state_path: Path, port: int) -> int:
    state_path.with_name(state_path.name + ".applied").unlink(missing_ok=True)
    log = state_path.with_suffix(".proxy.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "scoregate.packaging.proxy", "--listen", str(port), "--state", str(state_path)],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    return proc.pid


def _proxy_status(state_path: Path) -> dict[str, Any]:
    """What the proxy last wrote: the generation it applied, the upstreams still draining (and its port)."""
    try:
        status = json.loads(state_path.with_name(state_path.name + ".applied").read_text())
        if isinstance(status, int):  # the TCP proxy of earlier releases, still running: no draining report
            return {"generation": status, "draining": []}
        return {**status, "generation": int(status["generation"]), "draining": list(status.get("draining", []))}
    except (OSError, ValueError, KeyError, TypeError):
        return {"generation": -1, "draining": []}


def _wait_applied(state_path: Path, generation: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _proxy_status(state_path)["generation"] >= generation:
            return
        time.sleep(0.05)
    raise EngineError(f"the proxy did not apply generation {generation} within {timeout:g} s")


def _wait_drained(state_path: Path, upstream: str, timeout: float) -> bool:
    """Wait until no request is in flight on ``upstream`` (True), or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while upstream in _proxy_status(state_path)["draining"]:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=2.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise EngineError(f"the proxy on port {port} did not answer within {timeout:g} s")


def run_image(
    registry: Any, ref: str, *, port: int = 8080, image: str | None = None, engine: Engine | None = None
) -> dict[str, Any]:
    """Start the version's container and serve it on ``port`` through the switchable proxy."""
    if importlib.util.find_spec("aiohttp") is None:  # checked before a container is started
        raise EngineError("the proxy in front of the container needs aiohttp: pip install 'scoregate[deploy]'")
    engine = engine or Engine.detect()
    version = registry.resolve(ref)
    _authorize(registry, Permission.MOVE_ALIAS, version.ref)
    state_path = _state_path(registry, version.name)
    current = read_state(registry, version.name)
    if current and engine.is_running(current["container"]):
        raise ConflictError(
            f"{current['ref']} is already serving {version.name} on port {current['port']}: "
            f"use `scoregate deploy {version.ref} --replace {current['ref']}`"
        )
    image = _resolve_image(engine, version, image)
    running = start_container(engine, version.ref, image, f"g{int(time.time())}")
    generation = int(current.get("generation", 0)) + 1 if current else 1
    state = {
        "model": version.name,
        "ref": version.ref,
        "image": image,
        "container": running.container,
        "upstream": f"127.0.0.1:{running.port}",
        "port": int(port),
        "generation": generation,
        "previous": None,
    }
    if current and _proxy_alive(current) and int(current["port"]) == int(port):
        state["proxy_pid"] = current["proxy_pid"]
        _write_state(state_path, state)
    else:
        _write_state(state_path, state)
        state["proxy_pid"] = _start_proxy(state_path, port)
        _write_state(state_path, state)
    try:
        _wait_applied(state_path, generation)
        if not _proxy_alive(state):
            raise EngineError(f"the proxy for port {port} exited (is the port in use?)")
        _wait_listening(port)
    except EngineError:
        engine.remove(running.container)
        _state_path(registry, version.name).unlink(missing_ok=True)
        raise
    _audit(registry, Permission.MOVE_ALIAS, "image.run", version.ref, state)
    return state


@dataclass
class DeployResult:
    ok: bool
    ref: str
    replaced: str
    port: int
    reason: str | None = None
    report: Any = None
    state: dict[str, Any] | None = None
    drained: bool = True  # False: requests still in flight on the old container when it stopped


#: Longest wait, after the switch, for requests in flight on the old container to finish.
#: Only as long as they take: a deploy of a model answering in milliseconds waits milliseconds.
DEFAULT_DRAIN = 30.0


def deploy(
    registry: Any,
    ref: str,
    *,
    replace: str,
    image: str | None = None,
    engine: Engine | None = None,
    drain_seconds: float = DEFAULT_DRAIN,
) -> DeployResult:
    """Start ``ref`` beside the serving ``replace``; health, parity, switch, stop the old one.

    On any failure the old container keeps serving and the new one is removed.
    """
    engine = engine or Engine.detect()
    version = registry.resolve(ref)
    old = registry.resolve(replace)
    if old.name != version.name:
        raise ConflictError(f"{ref} cannot replace {replace}: they are different models")
    _authorize(registry, Permission.MOVE_PROTECTED_ALIAS, version.ref)
    state_path = _state_path(registry, version.name)
    current = read_state(registry, version.name)
    if not current or current.get("ref") != old.ref:
        serving = current.get("ref") if current else "nothing"
        raise ConflictError(f"{old.ref} is not what serves {version.name} here ({serving} does)")
    if not _proxy_alive(current) or not engine.is_running(current["container"]):
        raise ConflictError(f"{old.ref} is not running; start it with `scoregate image run {old.ref}`")
    port = int(current["port"])
    try:
        image = _resolve_image(engine, version, image)
        running = start_container(engine, version.ref, image, f"g{int(time.time())}")
    except ScoregateError as exc:
        return DeployResult(False, version.ref, old.ref, port, reason=f"the new container did not start: {exc}")
    report = validate_running(registry, version, running.url)
    if not report.passed:
        engine.remove(running.container)
        failures = report.failures[:3]
        why = "; ".join(f"{f.case.id}: {f.reason}" for f in failures) or "parity failed"
        return DeployResult(False, version.ref, old.ref, port, reason=f"validation failed: {why}", report=report)
    state = {
        **current,
        "ref": version.ref,
        "image": image,
        "container": running.container,
        "upstream": f"127.0.0.1:{running.port}",
        "generation": int(current.get("generation", 0)) + 1,
        "previous": {k: current[k] for k in ("ref", "image", "container", "upstream")},
    }
    _write_state(state_path, state)
    try:
        _wait_applied(state_path, state["generation"])
    except EngineError as exc:
        _write_state(state_path, {**current, "generation": state["generation"] + 1})
        engine.remove(running.container)
        return DeployResult(False, version.ref, old.ref, port, reason=str(exc), report=report)
    # requests that reached the old container before the switch finish there first
    drained = _wait_drained(state_path, current["upstream"], drain_seconds)
    engine.stop(current["container"])
    engine.remove(current["container"])
    _audit(
        registry,
        Permission.MOVE_PROTECTED_ALIAS,
        "image.deploy",
        version.ref,
        {"replaced": old.ref, "port": port, "image": image, "drained": drained},
    )
    return DeployResult(True, version.ref, old.ref, port, report=report, state=state, drained=drained)


def stop(registry: Any, name: str, *, engine: Engine | None = None) -> dict[str, Any] | None:
    """Stop the container and the proxy serving ``name``."""
    import signal

    current = read_state(registry, name)
    if current is None:
        return None
    # taking a model out of service needs what putting it there needed: a deployed (replaced)
    # version the deployer's permission, one started by `image run` the alias mover's
    permission = Permission.MOVE_PROTECTED_ALIAS if current.get("previous") else Permission.MOVE_ALIAS
    _authorize(registry, permission, str(current["ref"]))
    engine = engine or Engine.detect()
    engine.remove(current["container"])
    if _proxy_alive(current):
        os.kill(int(current["proxy_pid"]), signal.SIGTERM)
    path = _state_path(registry, name)
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".applied").unlink(missing_ok=True)
    _audit(
        registry,
        permission,
        "image.stop",
        str(current["ref"]),
        {"container": current["container"], "port": current.get("port"), "image": current.get("image")},
    )
    return current


def _authorize(registry: Any, permission: Any, subject: str) -> None:
    """Refuse before touching any container when the caller may not change what serves."""
    registry.whoami().require(permission, subject=subject)


def _audit(registry: Any, permission: Any, action: str, subject: str, after: dict[str, Any]) -> None:
    with registry.mutation(permission, subject) as (session, actor):
        registry.record_event(session, actor, action, subject, after=after)


test_image.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported into one
