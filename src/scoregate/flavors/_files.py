"""Finding the model file of an artifact that may be a file or a folder holding one."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from scoregate.errors import FlavorError


def single_model_file(path: Path, *, flavor: str, suffixes: Collection[str], what: str) -> Path:
    """``path`` itself, or the one file with a model suffix inside the folder ``path``."""
    path = Path(path)
    if path.is_dir():
        candidates = [p for p in path.iterdir() if p.is_file() and p.suffix in suffixes]
        if len(candidates) != 1:
            raise FlavorError(
                f"{flavor} flavor: directory {path.name!r} should hold one {what}, found {len(candidates)}"
            )
        return candidates[0]
    if not path.is_file():
        raise FlavorError(f"{flavor} flavor: no file at {path}")
    return path
