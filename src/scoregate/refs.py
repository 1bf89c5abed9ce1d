"""Model references: ``name``, ``name@3`` and ``name@alias``, parsed in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass

from scoregate.errors import InvalidReferenceError

NAME_PATTERN = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?"
ALIAS_PATTERN = r"[A-Za-z](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9])?"
_NAME = re.compile(NAME_PATTERN)
_ALIAS = re.compile(ALIAS_PATTERN)

#: Digits a version may have: versions are counted from 1 and fit in 64 bits.
MAX_VERSION_DIGITS = 18

REFERENCE_RULE = (
    "expected NAME, NAME@VERSION or NAME@ALIAS: the name uses letters, digits, '.', '_' and '-'; "
    "a version is a positive integer; an alias starts with a letter (e.g. credit-risk@3, credit-risk@production)"
)


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A parsed reference. Exactly one of ``version`` and ``alias`` may be set."""

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str, *, require_selector: bool = False) -> ModelRef:
        if not isinstance(text, str):
            raise InvalidReferenceError(f"invalid model reference {_shown(text)}: {REFERENCE_RULE}")
        name, sep, selector = text.strip().partition("@")
        if not _NAME.fullmatch(name) or (sep and not selector):
            raise InvalidReferenceError(f"invalid model reference {_shown(text)}: {REFERENCE_RULE}")
        if not sep:
            if require_selector:
                raise InvalidReferenceError(
                    f"invalid model reference {_shown(text)}: a version or alias is required "
                    f"(e.g. {name}@1 or {name}@production)"
                )
            return cls(name)
        if is_version(selector):
            version = int(selector)
            if version < 1:
                raise InvalidReferenceError(f"invalid model reference {_shown(text)}: {REFERENCE_RULE}")
            return cls(name, version=version)
        if not _ALIAS.fullmatch(selector):
            raise InvalidReferenceError(f"invalid model reference {_shown(text)}: {REFERENCE_RULE}")
        return cls(name, alias=selector)

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def _shown(text: object, limit: int = 80) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else f"{shown[: limit - 4]}...'"


def is_version(selector: str) -> bool:
    """True for ASCII digits of a version number (``str.isdigit`` also takes '²' and other digits)."""
    return selector.isascii() and selector.isdigit() and len(selector) <= MAX_VERSION_DIGITS


def is_alias(selector: str) -> bool:
    return _ALIAS.fullmatch(selector) is not None and not selector.isdigit()


def validate_model_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidReferenceError(
            f"invalid model name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def validate_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias) or alias.isdigit():
        raise InvalidReferenceError(
            f"invalid alias {alias!r}: an alias starts with a letter and uses letters, digits, '_' or '-' "
            "(at most 64 characters)"
        )
    return alias
