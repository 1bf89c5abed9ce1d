"""The one scorer interface every model flavor implements.

A scorer takes a columnar batch (a pandas DataFrame whose columns are the
schema's features, in order, already typed) and returns a DataFrame of outputs
with one row per input row. Serving, batch scoring and validation only ever see
this interface, so a new framework is one module here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd


class Scorer(ABC):
    """A loaded model, ready to score batches."""

    flavor: ClassVar[str]
    #: True when :meth:`predict_matrix` takes a float matrix directly (no frame needed).
    takes_matrix: bool = False
    #: The column order :meth:`predict_matrix` expects, when it is not the schema's order
    #: (a model fitted on a DataFrame reads the columns it was fitted on, by position).
    matrix_features: list[str] | None = None
    #: Distributions this loaded artifact needs beyond its flavor's (``skops`` for a model saved
    #: in that format): the environment record pins them too.
    packages: tuple[str, ...] = ()
    #: The output columns whose values are what ``mlflow.pyfunc`` returns for this model (one
    #: column: a list of values; several: a list of rows), when scoregate knows it (MLflow
    #: directories); None leaves it to the naming convention (see ``serving/mlflow_protocol``).
    pyfunc_outputs: tuple[str, ...] | None = None

    def accepts_unseen(self) -> frozenset[str]:
        """Input columns whose category levels the model takes without having seen them in
        training (a one-hot encoder that ignores unknown levels, LightGBM's native categoricals).

        Registration opens those category features (``unseen: score``) in a schema it
        inferred. Empty unless the flavor can tell for sure: a closed category refuses an
        unknown level, which is what it always did.
        """
        return frozenset()

    @abstractmethod
    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Score ``frame``; the result has one row per input row, in order."""

    def predict_columns(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The same outputs as named 1-D arrays.

        The server needs arrays, not a frame: a flavor whose framework returns arrays
        overrides this to skip building and taking apart a DataFrame per batch (about a
        quarter of a millisecond, as much as a small model's own call).
        """
        return {str(name): column.to_numpy() for name, column in self.predict(frame).items()}

    def predict_matrix(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        """The same outputs from a 2-D float64 array whose columns are the schema's features
        (in :attr:`matrix_features` order when that is set).

        Only called when :attr:`takes_matrix` is true. For an all-float schema and a model
        fitted on arrays the frame is pure overhead: building it and taking it apart again
        costs about 40 us per batch, which is a tenth of a small model's call.
        """
        raise NotImplementedError(f"the {self.flavor} scorer does not take a matrix")


class Flavor(ABC):
    """Knows how to load one kind of artifact into a :class:`Scorer`."""

    name: ClassVar[str]
    #: Distributions whose versions the environment record must pin for this flavor.
    packages: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def load(self, path: Path) -> Scorer:
        """Load the artifact at ``path`` (file or directory).

        Raises :class:`scoregate.errors.FlavorError` when the artifact is not of this
        flavor, naming the flavor and what was found instead.
        """
