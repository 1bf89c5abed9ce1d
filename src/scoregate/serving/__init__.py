"""Real-time scoring server: plain JSON and Open Inference Protocol V2 over raw ASGI.

``run(settings, host, port, workers, models)`` serves every aliased version from the
registry; ``create_app(source, ...)`` builds the ASGI app for embedding and tests;
``read_predictions(home, model, version)`` reads the prediction log.
"""

from scoregate.registry.predictions import Durability, PredictionLog, read_predictions
from scoregate.serving.app import ScoringApp, create_app
from scoregate.serving.local import local_server
from scoregate.serving.options import ServeOptions
from scoregate.serving.policy import CanarySplit, ShadowTarget, TrafficPolicy
from scoregate.serving.runner import run
from scoregate.serving.source import AliasEntry, InMemorySource, ModelSource, RegistrySource, VersionInfo

__all__ = [
    "AliasEntry",
    "CanarySplit",
    "Durability",
    "InMemorySource",
    "ModelSource",
    "PredictionLog",
    "RegistrySource",
    "ScoringApp",
    "ServeOptions",
    "ShadowTarget",
    "TrafficPolicy",
    "VersionInfo",
    "create_app",
    "local_server",
    "read_predictions",
    "run",
]
