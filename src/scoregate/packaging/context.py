"""The build context of a model version's image, generated under ``<home>/images/<name>-<version>/``.

Contents (deterministic: the same version gives byte-identical files)::

    Containerfile
    requirements.txt        pinned, hashed lock of what the image needs (recorded versions)
    wheels/                 one wheel per requirement (pip download --only-binary) + scoregate's own wheel
    model/version.json      the version's immutable record (a one-version registry the bundle source serves)
    model/artifacts/sha256/<2>/<digest>   the artifact blob, laid out like the artifact store

The lock is the registration-time ``environment["lock"]`` restricted to the dependency
closure (read from the installed distributions' metadata) of scoregate's runtime
requirements and the flavor's packages.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import scoregate
from scoregate.errors import InvalidInputError, ScoregateError

DEFAULT_BASE = "python:3.11-slim"
SERVING_PORT = 8080
USER_ID = 10001
#: Fields of a version record that change after registration; left out of the bundle.
VOLATILE_FIELDS = ("status", "aliases", "retired_at", "retire_reason", "tags")
#: Never pinned into the image: scoregate comes as its own wheel, the rest is installer tooling.
NOT_PINNED = {"scoregate", "pip", "setuptools", "wheel"}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_tag(name: str, version: int) -> str:
    return f"localhost/scoregate/{canonical(name)}:{version}"


@dataclass
class BuildContext:
    path: Path
    ref: str
    name: str
    version: int
    base: str
    tag: str
    labels: dict[str, str]
    requirements: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def files_digest(self) -> str:
        """One SHA-256 over every file's relative path and contents."""
        h = hashlib.sha256()
        for path in sorted(p for p in self.path.rglob("*") if p.is_file()):
            h.update(path.relative_to(self.path).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
        return h.hexdigest()


# -- the lock ------------------------------------------------------------------------------------


def _requirements_of(dist_name: str, extras: set[str]) -> list[Any]:
    # imported here: only the build host needs them, the image's entry point does not
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return []
    env = default_environment()
    wanted = []
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None:
            wanted.append(req)
            continue
        if any(req.marker.evaluate({**env, "extra": extra}) for extra in ({""} | extras)):
            wanted.append(req)
    return wanted


def dependency_closure(roots: list[str]) -> dict[str, set[str]]:
    """Canonical names (with the extras asked of them) of ``roots`` and everything they require."""
    seen: dict[str, set[str]] = {}
    todo: list[tuple[str, set[str]]] = [(r, set()) for r in roots]
    while todo:
        name, extras = todo.pop()
        key = canonical(name)
        known = seen.get(key)
        if known is not None and extras <= known:
            continue
        seen[key] = (known or set()) | extras
        for req in _requirements_of(name, seen[key]):
            todo.append((req.name, set(req.extras)))
    return seen


def pinned_requirements(version: Any) -> tuple[dict[str, str], list[str]]:
    """``{package: version}`` the image needs, at the versions recorded at registration."""
    env = version.environment or {}
    lock = {canonical(k): v for k, v in (env.get("lock") or {}).items()}
    flavor_packages = list((env.get("flavor_packages") or {}).keys())
    closure = dependency_closure(["scoregate", *flavor_packages])
    pins: dict[str, str] = {}
    notes: list[str] = []
    for name in sorted(closure):
        if name in NOT_PINNED:
            continue
        if name in lock:
            pins[name] = lock[name]
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            notes.append(f"{name}: required but neither recorded nor installed; left out")
            continue
        pins[name] = installed
        notes.append(f"{name}: not in the registration lock; pinned to the installed {installed}")
    return pins, notes


# -- wheels --------------------------------------------------------------------------------------


def wheel_cache_dir() -> Path:
    return Path(os.environ.get("SCOREGATE_WHEEL_CACHE", Path.home() / ".cache" / "scoregate" / "wheels"))


def fetch_wheel(name: str, version: str, cache: Path) -> Path:
    """The binary wheel of ``name==version`` for this interpreter, downloaded once into ``cache``."""
    folder = cache / f"{name}-{version}-cp{sys.version_info.major}{sys.version_info.minor}"
    found = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    if found:
        return found[0]
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".download-"))
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--no-deps",
        "--dest",
        str(staging),
        f"{name}=={version}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(staging.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        shutil.rmtree(staging, ignore_errors=True)
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise ScoregateError(f"cannot download a binary wheel of {name}=={version}: {detail[0]}")
    try:
        os.replace(staging, folder)
    except OSError:  # another build fetched it first
        shutil.rmtree(staging, ignore_errors=True)
    return sorted(folder.glob("*.whl"))[0]


def build_scoregate_wheel(dest: Path) -> Path:
    """A deterministic wheel of the installed scoregate: its package files and its metadata.

    Equivalent to ``pip wheel --no-deps`` of the source tree, without network access (no
    isolated build environment) and with fixed timestamps, so the same source gives the
    same bytes.
    """
    package = Path(scoregate.__file__).resolve().parent
    dist = metadata.distribution("scoregate")
    version = dist.version
    dist_info = f"scoregate-{version}.dist-info"
    files: list[tuple[str, bytes]] = []
    for path in sorted(package.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
            continue
        files.append((f"scoregate/{path.relative_to(package).as_posix()}", path.read_bytes()))
    meta = dist.read_text("METADATA") or f"Metadata-Version: 2.1\nName: scoregate\nVersion: {version}\n"
    files.append((f"{dist_info}/METADATA", meta.encode()))
    files.append(
        (
            f"{dist_info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: scoregate.packaging\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
    )
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        files.append((f"{dist_info}/entry_points.txt", entry_points.encode()))
    files.append((f"{dist_info}/top_level.txt", b"scoregate\n"))
    record_lines = []
    for arcname, data in files:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record_lines.append(f"{arcname},sha256={digest},{len(data)}")
    record_lines.append(f"{dist_info}/RECORD,,")
    files.append((f"{dist_info}/RECORD", ("\n".join(record_lines) + "\n").encode()))
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"scoregate-{version}-py3-none-any.whl"
    partial = target.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for arcname, data in files:
            info = zipfile.ZipInfo(arcname, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    os.replace(partial, target)
    return target


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- the Containerfile ---------------------------------------------------------------------------


def labels_for(version: Any, base: str, requirements_digest: str) -> dict[str, str]:
    return {
        "org.opencontainers.image.title": f"scoregate {version.name}@{version.version}",
        "org.opencontainers.image.description": (version.description or f"{version.flavor} model {version.name}")[:200],
        "org.opencontainers.image.version": str(version.version),
        "org.opencontainers.image.created": version.created_at.isoformat(timespec="seconds"),
        "org.opencontainers.image.vendor": "scoregate",
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.base.name": base,
        "org.opencontainers.image.revision": version.code_version or "",
        "scoregate.model.name": version.name,
        "scoregate.model.version": str(version.version),
        "scoregate.model.flavor": version.flavor,
        "scoregate.artifact.digest": f"sha256:{version.artifact_digest}",
        "scoregate.requirements.digest": f"sha256:{requirements_digest}",
        "scoregate.version": scoregate.__version__,
    }


def containerfile(base: str, labels: dict[str, str], ref: str, scoregate_wheel: str) -> str:
    label_lines = " \\\n      ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
    health = (
        "import sys, urllib.request; "
        f"sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:{SERVING_PORT}/v2/health/ready', timeout=3)"
        ".status == 200 else 1)"
    )
    return f"""# Generated by scoregate for {ref}; rebuild with `scoregate image build {ref}`.
FROM {base}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \\
    SCOREGATE_HOME=/var/lib/scoregate SCOREGATE_BUNDLE=/opt/model SCOREGATE_PORT={SERVING_PORT}
COPY requirements.txt /wheels/requirements.txt
COPY wheels/ /wheels/
RUN python3 -m venv /opt/scoregate \\
 && /opt/scoregate/bin/pip install --no-cache-dir --disable-pip-version-check --no-index \\
      --find-links /wheels --require-hashes -r /wheels/requirements.txt \\
 && /opt/scoregate/bin/pip install --no-cache-dir --disable-pip-version-check --no-index --no-deps \\
      /wheels/{scoregate_wheel} \\
 && rm -rf /wheels \\
 && echo 'scoregate:x:{USER_ID}:{USER_ID}:scoregate:/var/lib/scoregate:/usr/sbin/nologin' >> /etc/passwd \\
 && echo 'scoregate:x:{USER_ID}:' >> /etc/group \\
 && mkdir -p /var/lib/scoregate && chown {USER_ID}:{USER_ID} /var/lib/scoregate
COPY model/ /opt/model/
LABEL {label_lines}
USER {USER_ID}:{USER_ID}
WORKDIR /var/lib/scoregate
EXPOSE {SERVING_PORT}
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \\
  CMD ["/opt/scoregate/bin/python", "-c", {json.dumps(health)}]
ENTRYPOINT ["/opt/scoregate/bin/python", "-m", "scoregate.packaging.bundle"]
"""


# -- the whole context ---------------------------------------------------------------------------


def fix_mtimes(folder: Path) -> None:
    """One fixed mtime on every file and folder: the engine's layer cache keys on it, so an
    unchanged context (same version, or the same wheels for another version) reuses its layers."""
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)


def version_record(version: Any) -> dict[str, Any]:
    data = version.model_dump(mode="json")
    for key in VOLATILE_FIELDS:
        data.pop(key, None)
    return data


def write_bundle(folder: Path, record: dict[str, Any], blob: Path) -> None:
    """``model/``: the version record and its artifact blob, in the artifact store's layout."""
    model_dir = folder / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    digest = record["artifact_digest"]
    blob_dir = model_dir / "artifacts" / "sha256" / digest[:2]
    blob_dir.mkdir(parents=True)
    shutil.copyfile(blob, blob_dir / digest)
    (model_dir / "version.json").write_bytes(json.dumps(record, indent=2, sort_keys=True).encode() + b"\n")


def build_context(
    registry: Any,
    ref: str,
    *,
    base: str = DEFAULT_BASE,
    tag: str | None = None,
    root: Path | None = None,
) -> BuildContext:
    version = registry.resolve(ref)
    if version.status in ("retired", "deleted"):
        raise InvalidInputError(f"{version.ref} is {version.status}; it cannot be packaged")
    folder = Path(root or Path(registry.settings.home) / "images") / f"{canonical(version.name)}-{version.version}"
    folder.mkdir(parents=True, exist_ok=True)
    pins, notes = pinned_requirements(version)
    wheels = folder / "wheels"
    if wheels.exists():
        shutil.rmtree(wheels)
    wheels.mkdir()
    cache = wheel_cache_dir()
    lines = []
    for name, pinned in pins.items():
        wheel = fetch_wheel(name, pinned, cache)
        shutil.copyfile(wheel, wheels / wheel.name)
        lines.append(f"{name}=={pinned} --hash=sha256:{_sha256(wheel)}")
    requirements = "".join(f"{line}\n" for line in lines)
    (folder / "requirements.txt").write_text(requirements)
    own = build_scoregate_wheel(wheels)
    requirements_digest = hashlib.sha256(requirements.encode()).hexdigest()
    labels = labels_for(version, base, requirements_digest)
    (folder / "Containerfile").write_text(containerfile(base, labels, version.ref, own.name))
    blob = registry.artifacts.fetch(version.artifact_digest)
    write_bundle(folder, version_record(version), blob)
    fix_mtimes(folder)
    return BuildContext(
        path=folder,
        ref=version.ref,
        name=version.name,
        version=version.version,
        base=base,
        tag=tag or image_tag(version.name, version.version),
        labels=labels,
        requirements=pins,
        notes=notes,
    )
