"""ONNX models run with onnxruntime on the CPU, one intra-op thread.

Serving parallelism comes from workers and batching, so each session uses a
single thread. Inputs are either one 2-D tensor holding the features in schema
order or one ``[None, 1]`` tensor per column (skl2onnx per-column inputs).
skl2onnx classifier outputs (label plus probabilities, as a tensor or a ZipMap
list of dicts) become ``prediction`` and ``proba_<class>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scoregate.errors import FlavorError
from scoregate.flavors._outputs import one_line, output_frame, proba_columns
from scoregate.flavors.base import Flavor, Scorer

_DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
    "tensor(string)": object,
}
_LABEL_NAMES = {"output_label", "label"}
_PROBA_NAMES = {"output_probability", "probabilities", "output_probabilities", "probability"}


class OnnxScorer(Scorer):
    flavor = "onnx"

    def __init__(self, session: Any, class_labels: list[Any] | None = None) -> None:
        self.session = session
        inputs = session.get_inputs()
        outputs = session.get_outputs()
        for inp in inputs:
            if inp.type not in _DTYPES:
                raise FlavorError(f"onnx flavor: input {inp.name!r} has unsupported type {inp.type}")
        self._inputs = [(inp.name, _DTYPES[inp.type]) for inp in inputs]
        self._matrix = len(inputs) == 1 and len(inputs[0].shape or []) == 2 and inputs[0].shape[1] != 1
        # one 2-D numeric input reads the batch matrix as is (ONNX inputs are positional)
        self.takes_matrix = self._matrix and self._inputs[0][1] is not object
        self._output_names = [out.name for out in outputs]
        self._label_index: int | None = None
        self._proba_index: int | None = None
        self._zipmap = False
        names = self._output_names
        if (
            len(outputs) >= 2
            and names[0] in _LABEL_NAMES
            and (names[1] in _PROBA_NAMES or outputs[1].type.startswith("seq(map("))
        ):
            self._label_index, self._proba_index = 0, 1
            self._zipmap = outputs[1].type.startswith("seq(map(")
        self._proba_columns: list[str] | None = proba_columns(class_labels) if class_labels is not None else None
        self._zip_keys: list[Any] | None = None

    def _feeds(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        if self._matrix or (len(self._inputs) == 1 and frame.shape[1] == 1):
            name, dtype = self._inputs[0]
            return {name: frame.to_numpy(dtype=dtype)}
        if len(self._inputs) != frame.shape[1]:
            raise FlavorError(
                f"onnx flavor: the model has {len(self._inputs)} inputs but the batch has {frame.shape[1]} columns"
            )
        columns = frame.columns
        by_name = all(name in columns for name, _ in self._inputs)
        feeds = {}
        for j, (name, dtype) in enumerate(self._inputs):
            column = frame[name] if by_name else frame.iloc[:, j]
            values = column.astype(str).to_numpy(dtype=object) if dtype is object else column.to_numpy(dtype=dtype)
            feeds[name] = values.reshape(-1, 1)
        return feeds

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return output_frame(self.predict_columns(frame), len(frame))

    def predict_columns(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        return self._run(lambda: self._feeds(frame), len(frame))

    def predict_matrix(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        name, dtype = self._inputs[0]
        return self._run(lambda: {name: matrix.astype(dtype, copy=False)}, len(matrix))

    def _run(self, feeds: Any, n_rows: int) -> dict[str, np.ndarray]:
        try:
            results = self.session.run(self._output_names, feeds())
        except FlavorError:
            raise
        except Exception as exc:
            raise FlavorError(f"onnx flavor: the input does not fit the model: {one_line(exc)}") from None
        out: dict[str, Any] = {}
        if self._proba_index is not None:
            proba = results[self._proba_index]
            if self._zipmap:
                if self._zip_keys is None:
                    self._zip_keys = list(proba[0].keys()) if len(proba) else []
                    if self._proba_columns is None:
                        self._proba_columns = proba_columns(self._zip_keys)
                keys = self._zip_keys
                proba = np.array([[row[k] for k in keys] for row in proba], dtype=np.float32).reshape(n_rows, len(keys))
            else:
                proba = np.asarray(proba)
                if self._proba_columns is None:
                    self._proba_columns = proba_columns(range(proba.shape[1]))
            out["prediction"] = np.asarray(results[self._label_index]).reshape(-1)
            for k, column in enumerate(self._proba_columns):
                out[column] = proba[:, k]
        single = len(results) == 1
        for i, (name, value) in enumerate(zip(self._output_names, results, strict=True)):
            if i in (self._label_index, self._proba_index):
                continue
            array = np.asarray(value)
            if array.ndim == 2 and array.shape[1] == 1:
                array = array[:, 0]
            if array.ndim == 1:
                out["prediction" if single else name] = array
            elif array.ndim == 2:
                for k in range(array.shape[1]):
                    out[f"{name}_{k}"] = array[:, k]
            else:
                raise FlavorError(f"onnx flavor: output {name!r} has {array.ndim} dimensions; expected 1 or 2")
        return out


def _class_labels(path: Path) -> list[Any] | None:
    """Class labels stored in the graph (skl2onnx classifiers), when the onnx package is there."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.name == "classlabels_strings" and attribute.strings:
                return [s.decode() for s in attribute.strings]
            if attribute.name in ("classlabels_int64s", "classlabels_ints") and attribute.ints:
                return list(attribute.ints)
    return None


class OnnxFlavor(Flavor):
    name = "onnx"
    packages = ("onnxruntime", "onnx", "numpy")

    def load(self, path: Path) -> Scorer:
        path = Path(path)
        if path.is_dir():
            candidates = list(path.glob("*.onnx"))
            if len(candidates) != 1:
                raise FlavorError(
                    f"onnx flavor: directory {path.name!r} should hold one .onnx file, found {len(candidates)}"
                )
            path = candidates[0]
        if not path.is_file():
            raise FlavorError(f"onnx flavor: no file at {path}")
        try:
            import onnxruntime
        except ImportError:
            raise FlavorError("onnx flavor: the onnxruntime package is not installed") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            with path.open("rb") as handle:
                head = handle.read(16)
            raise FlavorError(
                f"onnx flavor: {path.name!r} is not a loadable ONNX model (starts with {head!r}; {one_line(exc)})"
            ) from None
        return OnnxScorer(session, _class_labels(path))


__all__ = ["OnnxFlavor", "OnnxScorer"]
