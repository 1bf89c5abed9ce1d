"""``python -m scoregate``: the same CLI as the ``scoregate`` command."""

from scoregate.cli import main

main()
