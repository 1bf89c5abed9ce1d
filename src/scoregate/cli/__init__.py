"""The ``scoregate`` command line (Typer + rich).

Every command is a thin shell over a service: parse and validate arguments, call
the service, render the result. Errors a user can cause print one line and exit
non-zero (see ``EXIT_CODES``); no traceback.
"""

from __future__ import annotations

from rich.markup import escape

# isort: off
# Each module adds its commands to the app; the order is the order of the help panels.
from scoregate.cli import registry, governance, audit, serving  # noqa: F401
from scoregate.cli import packaging, traffic  # noqa: F401
from scoregate.cli import monitoring, labels, alerting, batch  # noqa: F401
from scoregate.cli import server, ui  # noqa: F401

# isort: on
from scoregate.cli.app import EXIT_CODES, app, err, get_registry
from scoregate.cli.quality import register_commands
from scoregate.errors import ScoregateError

register_commands(app, get_registry)


def main() -> None:
    try:
        app()
    except ScoregateError as exc:
        err.print(f"[red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
        raise SystemExit(EXIT_CODES.get(exc.status_code, 1)) from None


if __name__ == "__main__":
    main()
