"""Reference scores from a separate process, with a hard wall-clock bound.

Every reference kind runs in a fresh Python process (``python -m
scoregate.validation.reference``) that shares nothing with the target's process
(patched scorers, servers, caches):

* ``subprocess``: opens the registry with the same settings and loads the version
  (digest-checked) with its flavor;
* ``scorer``: runs the validator's own scorer file;
* ``onnx``: converts the version's scikit-learn model and scores it with onnxruntime.

The request (registry settings, API token, rows) goes over stdin, never the command
line. The process says ``ready`` once its scorer is built, then answers with one JSON
document. Loading is bounded by :data:`REFERENCE_LOAD_S` and scoring by a multiple of the
per-case timeout (both cut to what the run has left); past either, the whole process
group is killed and the run goes on with one line saying so. Anything the model prints
goes to stderr, so it cannot corrupt the answer.
"""

from __future__ import annotations

import contextlib
import math
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from scoregate.errors import ScoregateError
from scoregate.validation.golden import read_golden, write_golden
from scoregate.validation.settings import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    REFERENCE_CALL_FACTOR,
    REFERENCE_LOAD_S,
    Clock,
    ReferenceKind,
    ValidationSettings,
)

_READY = b"ready\n"


@dataclass
class ReferenceAnswer:
    """What the reference process gave back.

    ``available``: it produced scores. ``error``: one line when it did not (or failed
    part-way); ``failed`` tells a failure (crash, hang, wrong answer) from a reference
    that cannot be built for this model (``available`` and ``failed`` both false).
    """

    kind: ReferenceKind
    outputs: list[dict[str, Any] | None] = field(default_factory=list)
    available: bool = False
    failed: bool = False
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class ReferenceFailed(ScoregateError):
    """The reference process crashed, hung or answered something unusable."""


def score_reference(
    registry: Any,
    version: Any,
    rows: list[dict[str, Any]],
    settings: ValidationSettings,
    clock: Clock,
    *,
    scorer_digest: str | None = None,
) -> ReferenceAnswer:
    """Score ``rows`` with the reference ``settings.reference`` names, within the run's bounds."""
    kind = settings.reference
    answer = ReferenceAnswer(kind)
    if kind is ReferenceKind.NONE:
        return answer
    if clock.expired:
        answer.failed, answer.error = True, f"the {kind} reference was not run: {clock.stop_reason()}"
        return answer
    request = {
        "kind": kind.value,
        "settings": registry.settings.model_dump(mode="json"),
        "token": getattr(registry, "token", None),
        "ref": version.ref,
        "schema": version.input_schema.model_dump(mode="json"),
        "scorer": str(settings.reference_scorer) if settings.reference_scorer else None,
        "rows": rows,
    }
    load_s = clock.bound(REFERENCE_LOAD_S)
    try:
        reply = exchange(orjson.dumps(request), load_s, lambda: clock.bound(settings.timeout_s * REFERENCE_CALL_FACTOR))
    except ReferenceFailed as exc:
        answer.failed, answer.error = True, f"the {kind} reference {exc.message}"
        return answer
    if not reply.get("available", False):
        answer.error = f"the {kind} reference is unavailable: {reply.get('reason') or 'no reason given'}"
        return answer
    outputs = reply.get("outputs")
    if not isinstance(outputs, list) or len(outputs) != len(rows):
        got = len(outputs) if isinstance(outputs, list) else "no"
        answer.failed, answer.error = True, f"the {kind} reference returned {got} output rows for {len(rows)}"
        return answer
    if scorer_digest is not None and reply.get("scorer_digest") != scorer_digest:
        answer.failed = True
        answer.error = "the reference scorer file changed during the run: the code that ran is not the one recorded"
        return answer
    answer.available, answer.outputs, answer.details = True, outputs, dict(reply.get("details") or {})
    return answer


def exchange(request: bytes, load_s: float, call_s: Any) -> dict[str, Any]:
    """Run the reference process on ``request``: ``load_s`` to get ready, then ``call_s()`` to answer."""
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scoregate.validation.reference"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,  # its own process group: a kill takes its children too
        )
        writer = threading.Thread(target=_feed, args=(proc, request), daemon=True)
        writer.start()
        try:
            head = _read_until(proc, load_s, ready=True)
            if head is None:
                raise ReferenceFailed(f"process did not get ready within {load_s:.3g} s (starting, loading): killed")
            if head.startswith(_READY):
                bound = call_s()
                body = _read_until(proc, bound, ready=False, buffer=head[len(_READY) :])
                if body is None:
                    raise ReferenceFailed(f"process did not answer within {bound:.3g} s of scoring: killed")
            else:
                body = head + (_read_until(proc, 5.0, ready=False) or b"")
            code = proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            raise ReferenceFailed("process did not exit after answering: killed") from None
        finally:
            _kill(proc)
        if code != 0 or not body.strip():
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace").strip().splitlines()[-3:]
            raise ReferenceFailed(f"process failed (exit {code}): {' | '.join(tail) or 'no output'}")
    try:
        reply = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ReferenceFailed(f"process answered something that is not JSON: {body[:80]!r}") from None
    if not isinstance(reply, dict):
        raise ReferenceFailed("process answered something that is not a JSON object")
    if reply.get("error"):
        raise ReferenceFailed(f"failed: {reply['error']}")
    return reply


def _feed(proc: subprocess.Popen[bytes], request: bytes) -> None:
    with contextlib.suppress(OSError):  # the process died or was killed: the reader reports it
        assert proc.stdin is not None
        proc.stdin.write(request)
        proc.stdin.close()


def _read_until(proc: subprocess.Popen[bytes], seconds: float, *, ready: bool, buffer: bytes = b"") -> bytes | None:
    """Read stdout until the first line (``ready``) or end of file; ``None`` when ``seconds`` pass first."""
    assert proc.stdout is not None
    deadline = time.monotonic() + seconds
    chunks = [buffer]
    seen = buffer
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while True:
            if ready and b"\n" in seen:
                return seen
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not selector.select(left):
                continue
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            if ready:
                seen += chunk


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10.0)
    for stream in (proc.stdout, proc.stdin):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


# ---------------------------------------------------------------------------------------------
# The reference process
# ---------------------------------------------------------------------------------------------


def _main() -> None:  # pragma: no cover - exercised through exchange()
    # The answer goes to the real stdout; anything the model prints goes to stderr.
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    request = orjson.loads(sys.stdin.buffer.read())
    try:
        score, details, digest = _build(request)
    except _Unavailable as exc:
        channel.write(orjson.dumps({"available": False, "reason": str(exc)}))
        channel.close()
        return
    except ScoregateError as exc:
        channel.write(orjson.dumps({"error": exc.message}))
        channel.close()
        return
    channel.write(_READY)
    channel.flush()
    rows = request["rows"]
    try:
        outputs = score(rows) if rows else []
    except ScoregateError as exc:
        answer: dict[str, Any] = {"error": exc.message}
    except Exception as exc:
        from scoregate.flavors._outputs import one_line

        answer = {"error": f"scoring raised {one_line(exc)}"}
    else:
        answer = {"available": True, "outputs": outputs, "details": details, "scorer_digest": digest}
    channel.write(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY))
    channel.close()


class _Unavailable(Exception):
    pass


def _build(request: dict[str, Any]) -> tuple[Any, dict[str, Any], str | None]:
    """(row scorer, details, scorer digest) for the requested kind."""
    from pathlib import Path

    from scoregate.schema import ModelSchema
    from scoregate.validation.independent import Unavailable, load_scorer_file, onnx_scorer

    kind = ReferenceKind(request["kind"])
    try:
        if kind is ReferenceKind.SCORER:
            schema = ModelSchema.model_validate(request["schema"])
            score, digest = load_scorer_file(Path(request["scorer"]), schema)
            return score, {"scorer": request["scorer"]}, digest
        loaded = _load(request)
        if kind is ReferenceKind.ONNX:
            score, details = onnx_scorer(loaded)
            return score, details, None
    except Unavailable as exc:
        raise _Unavailable(str(exc)) from None
    from scoregate.validation.targets import output_records

    def artifact(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return output_records(loaded.predict(rows))

    return artifact, {"artifact_digest": loaded.version.artifact_digest}, None


def _load(request: dict[str, Any]) -> Any:
    from scoregate.config import Settings
    from scoregate.registry import Registry

    settings = Settings(**request["settings"])
    token = request.get("token")
    registry = Registry(settings, token=token) if token else Registry.open(settings)
    try:
        return registry.load(request["ref"])
    finally:
        registry.close()


def subprocess_reference(
    settings: Any, ref: str, rows: list[dict[str, Any]], *, token: str | None = None, timeout: float = 300.0
) -> list[dict[str, Any]]:
    """Score ``rows`` with ``ref`` loaded from the registry in a fresh process (bounded by ``timeout``)."""
    request = {"kind": "subprocess", "settings": settings.model_dump(mode="json"), "token": token, "ref": ref}
    reply = exchange(orjson.dumps({**request, "rows": rows}), timeout, lambda: timeout)
    outputs = reply.get("outputs") or []
    if len(outputs) != len(rows):
        raise ScoregateError(f"the reference scorer returned {len(outputs)} rows for {len(rows)}")
    return outputs


def compare(target: Any, reference: Any, atol: float, rtol: float) -> float | None:
    """The size of the difference (0 when equal), ``None`` when within tolerance; inf when incomparable."""
    if isinstance(reference, bool) or isinstance(target, bool) or isinstance(reference, str) or isinstance(target, str):
        return None if _same_label(target, reference) else math.inf
    if reference is None or target is None:
        both_missing = _missing(reference) and _missing(target)
        return None if both_missing else math.inf
    try:
        a, b = float(target), float(reference)
    except (TypeError, ValueError):
        return None if target == reference else math.inf
    if math.isnan(a) or math.isnan(b):
        return None if math.isnan(a) and math.isnan(b) else math.inf
    diff = abs(a - b)
    return None if diff <= atol + rtol * abs(b) else diff


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _same_label(a: Any, b: Any) -> bool:
    if a == b:
        return True
    return str(a) == str(b)


__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "ReferenceAnswer",
    "compare",
    "exchange",
    "read_golden",
    "score_reference",
    "subprocess_reference",
    "write_golden",
]


if __name__ == "__main__":  # pragma: no cover
    _main()
