"""The registry service: one process holds the metadata database and the artifact store
credentials and exposes the registry and governance services as a REST API under /api/v1;
the CLI and ``scoregate.Client`` become its clients when ``SCOREGATE_URL`` is set."""

from scoregate.server.app import create_server_app
from scoregate.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_server_app"]
