"""The Typer application, its shared console and settings, and the helpers commands share."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from scoregate.config import Settings
from scoregate.errors import InvalidInputError
from scoregate.refs import shown

if TYPE_CHECKING:
    from scoregate.registry import Registry

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    help="Governed, monitored model scoring.",
)
models_app = typer.Typer(no_args_is_help=True, help="List and inspect registered models.")
alias_app = typer.Typer(no_args_is_help=True, help="Move, delete and list aliases (name@staging).")
app.add_typer(models_app, name="models", rich_help_panel="Registry")
app.add_typer(alias_app, name="alias", rich_help_panel="Registry")

out = Console()
err = Console(stderr=True)

#: Exit codes by error class, so scripts can tell "not found" from "conflict".
EXIT_CODES = {404: 4, 409: 5, 422: 3, 400: 2, 503: 6, 401: 7, 403: 8}


class State:
    settings: Settings | None = None
    request_id: str | None = None


state = State()


@app.callback()
def _main(
    home: Annotated[
        Path | None, typer.Option(help="Scoregate home (default ~/.scoregate; env SCOREGATE_HOME).")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Metadata database URL (env SCOREGATE_DATABASE_URL).")
    ] = None,
    artifacts_url: Annotated[str | None, typer.Option(help="Artifact store URL (env SCOREGATE_ARTIFACTS_URL).")] = None,
) -> None:
    state.settings = Settings.load(home=home, database_url=database_url, artifacts_url=artifacts_url)
    state.request_id = command_request_id()


def command_request_id() -> str:
    """The request id of this command's audit events: ``SCOREGATE_REQUEST_ID`` (a pipeline's
    run id, say) or a fresh ``cli-...`` one, so every change one command makes can be found
    together in the audit log."""
    given = os.environ.get("SCOREGATE_REQUEST_ID")
    if given is None:
        return f"cli-{uuid.uuid4().hex[:16]}"
    if not 0 < len(given) <= 128 or not given.isprintable():
        raise InvalidInputError(f"invalid SCOREGATE_REQUEST_ID {given[:40]!r}: expected 1-128 printable characters")
    return given


def get_registry() -> Registry:
    """The embedded registry, or a client of the registry service when ``SCOREGATE_URL`` (or
    ``url`` in the config file) names one: every command works the same either way."""
    settings = state.settings or Settings.load()
    request_id = state.request_id or command_request_id()
    if settings.url is not None:
        from scoregate.remote import RemoteRegistry

        return RemoteRegistry(settings, request_id=request_id)  # type: ignore[return-value]
    from scoregate.registry import Registry

    return Registry(settings, request_id=request_id)


def governance_for(registry: Any) -> Any:
    """The governance service over ``registry``, embedded or remote like it."""
    from scoregate.remote import RemoteGovernance, RemoteRegistry

    if isinstance(registry, RemoteRegistry):
        return RemoteGovernance(registry)
    from scoregate.governance.service import Governance

    return Governance(registry)


def pairs(values: list[str] | None, option: str, *, numeric: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"invalid {option} {shown(item)}: expected KEY=VALUE")
        if numeric:
            try:
                result[key] = float(value)
            except ValueError:
                raise InvalidInputError(f"invalid {option} {shown(item)}: {shown(value)} is not a number") from None
        else:
            result[key] = value
    return result


def rule(check: Callable[..., Any], *args: Any) -> Callable[[typer.CallbackParam, Any], Any]:
    """An option callback applying a :mod:`scoregate.limits` rule (``check(name, value, *args)``),
    so an option declares its rule once and a bad value gets the one-line error naming the
    option as the user typed it, before any work starts."""

    def callback(param: typer.CallbackParam, value: Any) -> Any:
        if value is not None:
            check(param.opts[0] if param.opts else str(param.name), value, *args)
        return value

    return callback


def read_text_file(path: Path, what: str, *, max_bytes: int = 1 << 20) -> str:
    """A UTF-8 text file the user named (a policy, a schema), or the one-line reason it is not one."""
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise InvalidInputError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise InvalidInputError(f"{what} {path} is larger than {max_bytes // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"{what} {path} is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x})"
        ) from None


def writable_file(path: Path, option: str) -> Path:
    """``path`` if a file can be written there: its folder exists and it is not a folder itself."""
    if path.is_dir():
        raise InvalidInputError(f"invalid {option} {path}: it is a folder; give a file name")
    if not path.parent.is_dir():
        raise InvalidInputError(f"invalid {option} {path}: the folder {path.parent} does not exist")
    return path


def first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(exc).splitlines()[0]
