"""Content-addressed artifact store: blobs named by their SHA-256, local or S3 via fsspec.

A blob is written once under ``sha256/<2 hex>/<digest>`` and never changed. Reading
always re-hashes the bytes, so an artifact altered behind the platform's back is
refused with :class:`IntegrityError` rather than scored. A directory artifact (an
MLflow model, a Python scorer package) is stored as a deterministic tar, so the
same files always give the same digest.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec

from scoregate.errors import IntegrityError, InvalidInputError, NotFoundError, StoreUnavailableError
from scoregate.files import DIR_MODE, FILE_MODE, make_private, private_dir

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Stream a file through SHA-256 (never loads it whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def pack_directory(directory: Path, destination: Path) -> None:
    """Write ``directory`` as a tar whose bytes depend only on file names, modes and contents."""

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
        return info

    with tarfile.open(destination, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in _walk_sorted(directory):
            if path.name == "__pycache__" or "__pycache__" in path.parts:
                continue
            tar.add(path, arcname=str(path.relative_to(directory)), recursive=False, filter=normalise)


def _walk_sorted(root: Path) -> Iterator[Path]:
    for path in sorted(root.iterdir(), key=lambda p: p.name):
        if path.is_symlink():
            raise InvalidInputError(
                f"artifact directory {root} contains a symbolic link ({path.name}); copy the file in"
            )
        yield path
        if path.is_dir():
            yield from _walk_sorted(path)


def _owner_only(root: Path) -> None:
    """Drop group and other permissions under an unpacked directory artifact."""
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), DIR_MODE)
        for name in files:
            path = os.path.join(folder, name)
            os.chmod(path, FILE_MODE | (os.stat(path).st_mode & 0o100))


class ArtifactStore:
    """Blobs under an fsspec URL, with a verified local cache for loading."""

    def __init__(self, url: str, cache_dir: Path, options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **(options or {}))
        except (ImportError, ValueError) as exc:
            raise StoreUnavailableError(f"cannot open artifact store {url!r}: {exc}") from None
        self.cache_dir = cache_dir
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self._local = "file" in protocols

    def _key(self, digest: str) -> str:
        return f"{self.root}/sha256/{digest[:2]}/{digest}"

    # -- writing -----------------------------------------------------------------------------

    def put(self, path: Path) -> tuple[str, int, str]:
        """Store a file or a directory; return ``(digest, size, kind)``. Idempotent."""
        path = Path(path)
        if path.is_dir():
            with tempfile.TemporaryDirectory() as tmp:
                packed = Path(tmp) / "artifact.tar"
                pack_directory(path, packed)
                digest, size = self.put_file(packed)
            return digest, size, "dir"
        if not path.is_file():
            raise InvalidInputError(f"artifact {path} does not exist or is not a file or directory")
        digest, size = self.put_file(path)
        return digest, size, "file"

    def put_file(self, path: Path) -> tuple[str, int]:
        digest = sha256_file(path)
        size = path.stat().st_size
        key = self._key(digest)
        try:
            if self.fs.exists(key):
                return digest, size
            if self._local:
                # Write beside the target and rename: a reader never sees half a blob.
                private_dir(os.path.dirname(key))
                partial = f"{key}.{uuid.uuid4().hex}.partial"
                shutil.copyfile(path, partial)
                make_private(partial)
                os.replace(partial, key)
            else:
                # An object store's PUT is atomic: the object appears whole or not at all.
                self.fs.put_file(str(path), key)
        except OSError as exc:
            raise StoreUnavailableError(f"cannot write to artifact store {self.url}: {exc}") from None
        return digest, size

    def put_bytes(self, data: bytes) -> str:
        with tempfile.NamedTemporaryFile(delete=False) as handle:
            handle.write(data)
        try:
            return self.put_file(Path(handle.name))[0]
        finally:
            os.unlink(handle.name)

    # -- reading -----------------------------------------------------------------------------

    def fetch(self, digest: str) -> Path:
        """Return a local path holding the verified blob, downloading it when needed."""
        cached = self.cache_dir / "blobs" / digest
        if cached.is_file():
            if sha256_file(cached) == digest:
                return cached
            cached.unlink()  # a damaged cache copy is dropped and fetched again
        private_dir(cached.parent)
        partial = cached.with_name(f"{digest}.{uuid.uuid4().hex}.partial")
        try:
            self.fs.get_file(self._key(digest), str(partial))
            make_private(partial)
        except FileNotFoundError:
            raise NotFoundError(f"artifact sha256:{digest} is missing from the artifact store {self.url}") from None
        except OSError as exc:
            raise StoreUnavailableError(f"cannot read from artifact store {self.url}: {exc}") from None
        actual = sha256_file(partial)
        if actual != digest:
            partial.unlink(missing_ok=True)
            raise IntegrityError(
                f"artifact integrity check failed: the stored blob for sha256:{digest} now hashes to "
                f"sha256:{actual}; it was altered after registration and will not be loaded"
            )
        os.replace(partial, cached)
        return cached

    def materialize(self, digest: str, kind: str, name: str) -> Path:
        """Return a local path to the artifact as registered (the file, or the unpacked directory)."""
        blob = self.fetch(digest)
        if kind == "file":
            target = self.cache_dir / "files" / digest / name
            if not target.is_file() or sha256_file(target) != digest:
                private_dir(target.parent)
                partial = target.with_name(f".{uuid.uuid4().hex}.partial")
                shutil.copyfile(blob, partial)
                make_private(partial)
                os.replace(partial, target)
            return target
        target = self.cache_dir / "dirs" / digest
        if not target.is_dir():
            private_dir(target.parent)
            staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".unpack-"))
            with tarfile.open(blob) as tar:
                tar.extractall(staging, filter="data")
            _owner_only(staging)
            try:
                os.replace(staging, target)
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
                if not target.is_dir():  # only another process unpacking it first is fine
                    raise
        return target

    def delete(self, digest: str) -> None:
        """Remove a blob (retention expiry) and its cached copies."""
        try:
            if self.fs.exists(self._key(digest)):
                self.fs.rm_file(self._key(digest))
        except OSError as exc:
            raise StoreUnavailableError(f"cannot delete from artifact store {self.url}: {exc}") from None
        (self.cache_dir / "blobs" / digest).unlink(missing_ok=True)
        shutil.rmtree(self.cache_dir / "files" / digest, ignore_errors=True)

    def read_bytes(self, digest: str) -> bytes:
        return self.fetch(digest).read_bytes()

    def open_bytes(self, digest: str) -> io.BytesIO:
        return io.BytesIO(self.read_bytes(digest))
