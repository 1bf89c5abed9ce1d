"""A Python-flavor scorer of the credit data that hangs when told to, for the tests that every
command stops a hanging model at its bound."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

SCORER = """
    import itertools
    import json
    import time
    from pathlib import Path

    import numpy as np
    import pandas as pd


    def hang(how):
        if how == "spin":  # Python bytecode, holding the interpreter lock between switches
            while True:
                pass
        if how == "spin-in-c":  # one C call that never returns nor lets a signal handler run
            sum(itertools.count())
        time.sleep(10**6)


    class Scorer:
        def __init__(self, directory):
            self.config = json.loads((Path(directory) / "hang.json").read_text())
            marker = self.config.get("load_hangs_if")
            if marker is not None and Path(marker).exists():
                hang(self.config["how"])
            self.calls = 0

        def predict(self, frame):
            self.calls += 1
            rows = self.config.get("when_rows")
            if self.calls > self.config["after_calls"] and (rows is None or len(frame) == rows):
                hang(self.config["how"])
            p = 1 / (1 + np.exp(-(3 * frame["debt_ratio"].to_numpy(dtype=float) - 1)))
            return pd.DataFrame({"prediction": (p > 0.5).astype(int), "proba_1": p})
"""


def hanging_scorer(
    folder: Path,
    *,
    how: str = "sleep",
    after_calls: int = 0,
    when_rows: int | None = None,
    load_hangs_if: Path | None = None,
) -> Path:
    """A scorer directory whose ``predict`` hangs (``how``: sleep, spin or spin-in-c) once it has
    answered ``after_calls`` calls, on frames of ``when_rows`` rows only when given; and whose
    constructor hangs while the file ``load_hangs_if`` exists."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scorer.py").write_text(textwrap.dedent(SCORER))
    marker = str(load_hangs_if) if load_hangs_if is not None else None
    config = {"how": how, "after_calls": after_calls, "when_rows": when_rows, "load_hangs_if": marker}
    (folder / "hang.json").write_text(json.dumps(config))
    return folder


def stored(home: Path) -> dict[str, object]:
    """Everything a registry under ``home`` has stored: every row of every table, and the
    artifact store's files; equal before and after means nothing stored changed."""
    from sqlalchemy import create_engine, inspect, text

    from scoregate.config import Settings

    settings = Settings(home=home)
    engine = create_engine(settings.resolved_database_url)
    try:
        with engine.connect() as connection:
            tables = {
                name: [tuple(row) for row in connection.execute(text(f'SELECT * FROM "{name}"'))]
                for name in sorted(inspect(connection).get_table_names())
            }
    finally:
        engine.dispose()
    root = Path(settings.resolved_artifacts_url)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
    return {"tables": tables, "artifacts": files}
