"""Anchors: checkpoints of the audit chain kept where the database's owner cannot rewrite them.

The I/O around ``checkpoint``: key files and the HMAC secret's environment variable in,
checkpoint files out (written once, never replaced), to a local file, an fsspec folder
or bucket (``s3://bucket/anchors``, one object per checkpoint, named by seq, created
only if absent), or a webhook (HTTPS POST, bounded in time, any non-2xx is a failure).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scoregate.errors import InvalidInputError, StoreUnavailableError

if TYPE_CHECKING:  # imported where used: the CLI imports this module for its help text
    from scoregate.governance.checkpoint import AnchorKey, Checkpoint

#: Environment variable of the HMAC secret when none is named.
DEFAULT_HMAC_ENV = "SCOREGATE_AUDIT_HMAC_KEY"
PRIVATE_KEY_FILE = "audit-anchor.key"
PUBLIC_KEY_FILE = "audit-anchor.pub"
#: Key and checkpoint files are a few hundred bytes; anything this large is not one.
MAX_FILE = 64 * 1024
DEFAULT_TIMEOUT = 10.0
MAX_TIMEOUT = 600.0


# -- keys ----------------------------------------------------------------------------------------


def read_private_key(path: Path) -> AnchorKey:
    from scoregate.governance import checkpoint

    return checkpoint.private_key(_read(path, "key file"), str(path))


def read_public_key(path: Path) -> AnchorKey:
    from scoregate.governance import checkpoint

    return checkpoint.public_key(_read(path, "public key file"), str(path))


def hmac_key_from_env(variable: str | None = None, environ: Mapping[str, str] = os.environ) -> AnchorKey:
    from scoregate.governance import checkpoint

    name = variable or DEFAULT_HMAC_ENV
    secret = environ.get(name)
    if not secret:
        raise InvalidInputError(f"environment variable {name} is not set: it must hold the HMAC secret of the anchors")
    return checkpoint.hmac_key(secret, f"environment variable {name}")


def write_keypair(folder: Path) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair into ``folder``: the private key readable by its owner only."""
    from scoregate.governance import checkpoint

    private_pem, public_pem = checkpoint.generate_keypair()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"cannot create folder {folder}: {exc.strerror}") from None
    private, public = folder / PRIVATE_KEY_FILE, folder / PUBLIC_KEY_FILE
    for path in (private, public):
        if path.exists():
            raise InvalidInputError(f"{path} already exists: keygen never replaces a key")
    write_once(private, private_pem, mode=0o600)
    write_once(public, public_pem, mode=0o644)
    return private, public


# -- checkpoints ---------------------------------------------------------------------------------


def read_checkpoint(path: Path) -> Checkpoint:
    from scoregate.governance import checkpoint

    return checkpoint.parse(_read(path, "checkpoint file"), str(path))


def write_once(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Create ``path`` with ``data``, durably; refuse if it exists (never replaced, never half-written)."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise InvalidInputError(f"{partial} exists: another write is in progress, or one was interrupted") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(partial, path)  # fails if the name exists, where a rename would replace it
        except FileExistsError:
            raise InvalidInputError(f"{path} already exists: an anchor is never replaced") from None
        except OSError as exc:
            raise InvalidInputError(f"cannot write {path}: {exc.strerror}") from None
        _fsync_folder(path.parent)
    finally:
        partial.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def checkpoint_name(seq: int) -> str:
    """The file or object name of the checkpoint of event ``seq``: sorts in seq order."""
    return f"checkpoint-{seq:012d}.json"


def publish(
    anchor: Checkpoint,
    destination: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    options: Mapping[str, Any] | None = None,
) -> str:
    """Send ``anchor`` to a webhook or write it into a folder or bucket, within ``timeout``
    seconds in all; says what was done."""
    if not 0 < timeout <= MAX_TIMEOUT:
        raise InvalidInputError(f"invalid timeout {timeout}: must be more than 0 and at most {MAX_TIMEOUT:g} s")
    body = anchor.to_json().encode()
    if destination.startswith(("http://", "https://")):
        return _within(timeout, f"anchor webhook {destination}", lambda: _post(destination, body, timeout))
    storage = dict(options or {})
    return _within(timeout, f"anchor store {destination}", lambda: _store(anchor, destination, body, storage))


def _within(seconds: float, what: str, work: Callable[[], str]) -> str:
    """``work()``, waited for at most ``seconds``: httpx and the fsspec backends bound each
    connect and read, not the whole (S3 retries with backoff; a server may answer a byte at a
    time). The work runs on a daemon thread, so one that hangs does not keep the process."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as exc:  # handed to the caller below
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="scoregate-anchor", daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        raise StoreUnavailableError(f"{what} did not answer within {seconds:g} s")
    done, value = outcome[0]
    if not done:
        raise value
    return str(value)


def _post(url: str, body: bytes, timeout: float) -> str:
    import httpx

    headers = {"Content-Type": "application/json", "User-Agent": "scoregate-audit-anchor"}
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=httpx.Timeout(timeout))
    except httpx.TimeoutException:
        raise StoreUnavailableError(f"anchor webhook {url} did not answer within {timeout:g} s") from None
    except (httpx.HTTPError, ValueError) as exc:
        raise StoreUnavailableError(f"anchor webhook {url} failed: {type(exc).__name__}: {exc}") from None
    if not response.is_success:
        raise StoreUnavailableError(
            f"anchor webhook {url} answered HTTP {response.status_code}: the anchor was not kept"
        )
    return f"sent to {url} (HTTP {response.status_code})"


def _store(anchor: Checkpoint, destination: str, body: bytes, options: dict[str, Any]) -> str:
    if "://" not in destination:  # a local folder: the durable, link-based write
        folder = Path(destination).expanduser()
        if not folder.is_dir():
            raise InvalidInputError(f"folder {folder} does not exist")
        path = folder / checkpoint_name(anchor.seq)
        try:
            write_once(path, body)
        except InvalidInputError:
            if path.exists():
                return _already(anchor, path.read_bytes(), str(path))
            raise
        return f"wrote {path}"
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(destination, **options)
    except (ValueError, ImportError, TypeError) as exc:
        raise InvalidInputError(f"cannot use anchor destination {destination}: {exc}") from None
    path = f"{root.rstrip('/')}/{checkpoint_name(anchor.seq)}"
    where = f"{destination.rstrip('/')}/{checkpoint_name(anchor.seq)}"
    try:
        with fs.open(path, "xb") as out:  # S3: a conditional PUT (If-None-Match), never a replacement
            out.write(body)
    except FileExistsError:
        with fs.open(path, "rb") as existing:
            return _already(anchor, existing.read(MAX_FILE + 1), where)
    except Exception as exc:  # each fsspec backend raises kinds of its own (botocore's, for S3)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreUnavailableError(f"cannot write the anchor to {where}: {reason}") from None
    return f"wrote {where}"


def _already(anchor: Checkpoint, existing: bytes, where: str) -> str:
    """An anchor of the same event may be there already: fine if it records the same hash."""
    from scoregate.governance import checkpoint

    try:
        found = checkpoint.parse(existing, where)
    except InvalidInputError:
        found = None
    if found is None or (found.seq, found.hash) != (anchor.seq, anchor.hash):
        raise InvalidInputError(f"{where} already exists and records something else: an anchor is never replaced")
    return f"{where} already anchors event {anchor.seq} with this hash"


def _read(path: Path, what: str) -> bytes:
    try:
        if path.is_dir():
            raise InvalidInputError(f"{what} {path} is a folder")
        with path.open("rb") as file:
            data = file.read(MAX_FILE + 1)
    except FileNotFoundError:
        raise InvalidInputError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > MAX_FILE:
        raise InvalidInputError(f"{what} {path} is larger than {MAX_FILE // 1024} KiB: it is not one")
    return data
