"""Plain Python scorer classes: a ``.py`` file, or a directory holding ``scorer.py``.

For models no framework flavor covers. The module is imported from its file
under a unique name, and the helper modules beside it stay its own, so two
versions of the same scorer can be loaded side by side; whatever its ``predict``
returns is normalised to the output frame.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from scoregate.errors import FlavorError
from scoregate.flavors._outputs import one_line, to_output_frame
from scoregate.flavors.base import Flavor, Scorer

_counter = itertools.count()
_MODULE_PREFIX = "scoregate_user_scorer_"


class PythonScorer(Scorer):
    flavor = "python"

    def __init__(self, instance: Any) -> None:
        self.instance = instance
        self._predict = instance.predict

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return to_output_frame(self._predict(frame), len(frame), self.flavor)


@contextlib.contextmanager
def _own_modules(directory: Path) -> Iterator[None]:
    """Let the scorer import the modules beside it, and keep them its own.

    Helper modules next to ``scorer.py`` (``import features``) are imported by their plain
    names. Left in ``sys.modules``, the first version's ``features`` would be handed to
    every later scorer that imports a ``features`` of its own: version 2 of a model would
    silently run version 1's helpers. So the modules imported from the scorer's directory
    while it is imported and constructed (which is also when it unpickles objects whose
    classes live in its helpers) are taken out of ``sys.modules`` afterwards. The scorer
    keeps them through its own references, so they must be imported at the top of
    ``scorer.py`` or in its constructor, not lazily inside ``predict``.
    """
    root = directory.resolve()
    before = set(sys.modules)
    path = str(directory)
    sys.path.insert(0, path)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # the module may have removed it itself
            sys.path.remove(path)
        added = [n for n in sys.modules if n not in before and not n.startswith(_MODULE_PREFIX)]
        for name in [n for n in added if _lives_in(sys.modules[n], root)]:
            del sys.modules[name]


def _lives_in(module: Any, root: Path) -> bool:
    file = getattr(module, "__file__", None)
    return file is not None and Path(file).resolve().is_relative_to(root)


def _import(file: Path) -> Any:
    digest = hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]
    module_name = f"{_MODULE_PREFIX}{digest}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise FlavorError(f"python flavor: cannot import {file.name!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise FlavorError(f"python flavor: importing {file.name!r} failed: {one_line(exc)}") from None
    return module


def _scorer_class(module: Any, file: Path) -> type:
    def own(obj: Any) -> bool:
        return inspect.isclass(obj) and obj.__module__ == module.__name__

    named = getattr(module, "Scorer", None)
    if own(named) and callable(getattr(named, "predict", None)):
        return named
    classes = [obj for obj in vars(module).values() if own(obj) and callable(getattr(obj, "predict", None))]
    if len(classes) == 1:
        return classes[0]
    if not classes:
        raise FlavorError(f"python flavor: {file.name!r} defines no class with a predict method")
    names = ", ".join(sorted(c.__name__ for c in classes))
    raise FlavorError(f"python flavor: {file.name!r} defines several classes with predict ({names}); name one Scorer")


def _instantiate(cls: type, directory: Path) -> Any:
    try:
        parameters = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    try:
        return cls(directory) if len(positional) == 1 else cls()
    except Exception as exc:
        raise FlavorError(f"python flavor: creating {cls.__name__} failed: {one_line(exc)}") from None


class PythonFlavor(Flavor):
    name = "python"
    packages = ("numpy", "pandas")

    def load(self, path: Path) -> Scorer:
        path = Path(path)
        if path.is_dir():
            file = path / "scorer.py"
            if not file.is_file():
                found = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
                raise FlavorError(f"python flavor: directory {path.name!r} has no scorer.py (found: {found})")
            directory = path
        elif path.is_file():
            if path.suffix != ".py":
                raise FlavorError(
                    f"python flavor: expected a .py file or a directory with scorer.py, got {path.name!r}"
                )
            file, directory = path, path.parent
        else:
            raise FlavorError(f"python flavor: no file or directory at {path}")
        with _own_modules(file.parent):
            module = _import(file)
            return PythonScorer(_instantiate(_scorer_class(module, file), directory))


__all__ = ["PythonFlavor", "PythonScorer"]
