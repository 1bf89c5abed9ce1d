"""Time to register a version and to load one cold, for each flavor.

Registration loads the artifact and scores 100 training rows in the model worker process
(``scoregate.isolation``); the first registration of the run also starts that worker, and
is printed apart (the medians are of later ones, as in a long-lived process).

"Cold" means a fresh process-level cache: a new Registry on the same stores with an
empty local cache, so the load fetches the blob, verifies its SHA-256 and loads it
with its framework. Run: ``.venv/bin/python benchmarks/registry.py``.

Then team mode: the same registration and cold load of the sklearn model embedded and as a
client of a ``scoregate server`` on the same machine (the artifact and training file
uploaded, the model tried by the service; the load downloading through it, digest-checked on
both sides), interleaved, with the ratio remote / embedded (the anchor). Only that part:
``benchmarks/registry.py team``.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from scoregate.config import Settings
from scoregate.registry import Registry

ROWS, FEATURES, REPEATS = 5_000, 20, 5


def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(ROWS, FEATURES)), columns=[f"f{i}" for i in range(FEATURES)])
    y = (x["f0"] + x["f1"] ** 2 + rng.normal(size=ROWS) > 1).astype(int).to_numpy()
    return x, y


def sklearn_model(folder: Path, x: pd.DataFrame, y: np.ndarray) -> Path:
    path = folder / "model.joblib"
    joblib.dump(HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(x, y), path)
    return path


def xgboost_model(folder: Path, x: pd.DataFrame, y: np.ndarray) -> Path:
    import xgboost

    path = folder / "model.json"
    xgboost.XGBClassifier(n_estimators=100, max_depth=4).fit(x, y).save_model(path)
    return path


def lightgbm_model(folder: Path, x: pd.DataFrame, y: np.ndarray) -> Path:
    import lightgbm

    path = folder / "model.txt"
    lightgbm.LGBMClassifier(n_estimators=100, verbose=-1).fit(x, y).booster_.save_model(path)
    return path


def onnx_model(folder: Path, x: pd.DataFrame, y: np.ndarray) -> Path:
    from skl2onnx import to_onnx

    path = folder / "model.onnx"
    model = LogisticRegression(max_iter=500).fit(x.to_numpy(np.float32), y)
    path.write_bytes(to_onnx(model, x.to_numpy(np.float32)[:1], options={"zipmap": False}).SerializeToString())
    return path


def python_model(folder: Path, x: pd.DataFrame, y: np.ndarray) -> Path:
    path = folder / "scorer.py"
    path.write_text(
        "import numpy as np\n\n"
        "class Scorer:\n"
        "    def predict(self, frame):\n"
        "        return {'prediction': 1 / (1 + np.exp(-frame['f0'].to_numpy()))}\n"
    )
    return path


def mlflow_model(folder: Path, x: pd.DataFrame, y: np.ndarray) -> Path:
    import mlflow.sklearn

    path = folder / "mlflow_model"
    mlflow.sklearn.save_model(
        LogisticRegression(max_iter=500).fit(x, y),
        path,
        serialization_format="cloudpickle",
        pip_requirements=["scikit-learn"],  # skip requirement inference (slow, and not what is timed)
    )
    return path


MAKERS: dict[str, Callable[[Path, pd.DataFrame, np.ndarray], Path]] = {
    "sklearn": sklearn_model,
    "xgboost": xgboost_model,
    "lightgbm": lightgbm_model,
    "onnx": onnx_model,
    "python": python_model,
    "mlflow": mlflow_model,
}


def main() -> None:
    x, y = data()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train = root / "train.parquet"
        x.assign(target=y).to_parquet(train, index=False)
        settings = Settings(home=root / "home")
        registry = Registry(settings)
        first: float | None = None
        print(f"{'flavor':10} {'register (ms)':>14} {'cold load (ms)':>15} {'warm load (ms)':>15}")
        for flavor, make in MAKERS.items():
            folder = root / flavor
            folder.mkdir()
            artifact = make(folder, x, y)
            register_times, cold_times, warm_times = [], [], []
            for i in range(REPEATS if first is not None else REPEATS + 1):
                start = time.perf_counter()
                version = registry.register(
                    f"bench-{flavor}", artifact, flavor=flavor, train_data=train, target="target"
                )
                if first is None:
                    first = time.perf_counter() - start
                    continue
                register_times.append(time.perf_counter() - start)
                cold = Registry(
                    settings.model_copy(
                        update={
                            "home": root / f"cold-{flavor}-{i}",
                            "database_url": settings.resolved_database_url,
                            "artifacts_url": settings.resolved_artifacts_url,
                        }
                    )
                )
                start = time.perf_counter()
                cold.load(version.ref)
                cold_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                cold.load(version.ref)
                warm_times.append(time.perf_counter() - start)
                cold.close()
            print(
                f"{flavor:10} {statistics.median(register_times) * 1e3:14.1f} "
                f"{statistics.median(cold_times) * 1e3:15.1f} {statistics.median(warm_times) * 1e3:15.1f}"
            )
        print(f"(median of {REPEATS}; training data {ROWS} rows x {FEATURES} features; SQLite + local folder)")
        print(f"(the run's first registration, apart: it also starts the model worker: {(first or 0) * 1e3:.0f} ms)")


def team_mode(repeats: int = 7) -> None:
    """Register and cold-load embedded and remote, interleaved; print both and the ratios."""
    import httpx

    from scoregate.governance.service import Governance
    from scoregate.remote import RemoteRegistry

    x, y = data()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train = root / "train.parquet"
        x.assign(target=y).to_parquet(train, index=False)
        artifact = sklearn_model(root, x, y)
        settings = Settings(home=root / "service")
        token = Governance(Registry(settings)).init("admin")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCOREGATE_")}
        env["SCOREGATE_HOME"] = str(settings.home)
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
        server = subprocess.Popen(
            [sys.executable, "-m", "scoregate", "server", "--port", str(port)], env=env, stdout=subprocess.DEVNULL
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            embedded = Registry(settings, token=token)
            remote = RemoteRegistry(Settings(home=root / "client", url=url, token=token))
            clients = {"embedded": embedded, "remote": remote}
            times: dict[str, dict[str, list[float]]] = {m: {"register": [], "load": []} for m in clients}
            for name, registry in clients.items():  # warm-up: the model workers on both sides
                registry.register(f"warm-{name}", artifact, flavor="sklearn", train_data=train, target="target")
            for i in range(repeats):
                for name, registry in clients.items():
                    start = time.perf_counter()
                    version = registry.register("bench", artifact, flavor="sklearn", train_data=train, target="target")
                    times[name]["register"].append(time.perf_counter() - start)
                    cold_home = root / f"cold-{name}-{i}"
                    if name == "embedded":
                        cold: Any = Registry(settings.model_copy(update={"home": cold_home,
                            "database_url": settings.resolved_database_url,
                            "artifacts_url": settings.resolved_artifacts_url}), token=token)  # fmt: skip
                    else:
                        cold = RemoteRegistry(Settings(home=cold_home, url=url, token=token))
                    start = time.perf_counter()
                    cold.load(version.ref)
                    times[name]["load"].append(time.perf_counter() - start)
                    cold.close()
            print(f"\nteam mode (sklearn, median of {repeats}, interleaved)")
            print(f"{'':10} {'register (ms)':>14} {'cold load (ms)':>15}")
            medians = {m: {k: statistics.median(v) * 1e3 for k, v in t.items()} for m, t in times.items()}
            for name in clients:
                print(f"{name:10} {medians[name]['register']:14.1f} {medians[name]['load']:15.1f}")
            ratio = {k: medians["remote"][k] / medians["embedded"][k] for k in ("register", "load")}
            print(f"{'ratio':10} {ratio['register']:14.2f} {ratio['load']:15.2f}   (remote / embedded; budget 1.20)")
            remote.close()
            embedded.close()
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    if sys.argv[1:] == ["team"]:
        team_mode()
    else:
        main()
        team_mode()
