"""Model references: ``name``, ``name@3`` and ``name@alias``, parsed in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass

from scoregate.errors import InvalidReferenceError

NAME_PATTERN = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?"
ALIAS_PATTERN = r"[A-Za-z](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9])?"
_NAME = re.compile(NAME_PATTERN)
_ALIAS = re.compile(ALIAS_PATTERN)

#: The largest version number (the database column is a 32-bit integer).
MAX_VERSION = 2**31 - 1

REFERENCE_RULE = (
    "expected NAME, NAME@VERSION or NAME@ALIAS: the name uses letters, digits, '.', '_' and '-'; "
    f"a version is a whole number from 1 to {MAX_VERSION}; an alias starts with a letter "
    "(e.g. credit-risk@3, credit-risk@production)"
)
#: Characters of a refused value echoed back in its error (a megabyte argument is not repeated).
ECHO_CHARS = 80


def shown(text: object) -> str:
    """``text`` as it appears in an error: quoted, and cut to ECHO_CHARS with an ellipsis."""
    if isinstance(text, str) and len(text) > ECHO_CHARS:
        return repr(text[:ECHO_CHARS]) + f"… ({len(text)} characters)"
    return repr(text)


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A parsed reference. Exactly one of ``version`` and ``alias`` may be set."""

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str, *, require_selector: bool = False) -> ModelRef:
        bad = InvalidReferenceError(f"invalid model reference {shown(text)}: {REFERENCE_RULE}")
        if not isinstance(text, str):
            raise bad
        name, sep, selector = text.strip().partition("@")
        if not _NAME.fullmatch(name) or (sep and not selector):
            raise bad
        if not sep:
            if require_selector:
                raise InvalidReferenceError(
                    f"invalid model reference {shown(text)}: a version or alias is required "
                    f"(e.g. {name}@1 or {name}@production)"
                )
            return cls(name)
        if selector.isascii() and selector.isdigit():
            if not is_version(selector):
                raise bad
            return cls(name, version=int(selector))
        if not _ALIAS.fullmatch(selector):
            raise bad
        return cls(name, alias=selector)

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def is_version(selector: str) -> bool:
    """True for the ASCII digits of a version from 1 to MAX_VERSION (``str.isdigit`` also takes
    '²'; the length test comes first, as int() of a long digit string is slow and limited)."""
    return (
        selector.isascii()
        and selector.isdigit()
        and len(selector) <= len(str(MAX_VERSION))
        and 1 <= int(selector) <= MAX_VERSION
    )


def is_alias(selector: str) -> bool:
    return _ALIAS.fullmatch(selector) is not None and not selector.isdigit()


def validate_model_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidReferenceError(
            f"invalid model name {shown(name)}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def validate_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias) or alias.isdigit():
        raise InvalidReferenceError(
            f"invalid alias {shown(alias)}: an alias starts with a letter and uses letters, digits, '_' or '-' "
            "(at most 64 characters)"
        )
    return alias
