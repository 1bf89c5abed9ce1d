"""``scoregate predictions`` and ``reproduce`` on a log that holds hostile text: control characters
never reach the terminal raw, and either id finds a decision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scoregate.registry.predictions import PredictionLog
from scoregate.serving.batcher import Outputs

ESCAPES = "\x1b[2J\x1b]0;owned\x07\u202e\x9b"  # clear screen, set title, bell, bidi override, CSI


def test_printing_the_log_escapes_control_characters(run: Any, home: Path, credit_files: dict[str, Path]) -> None:
    code, _, err = run(
        "register", "credit-risk", credit_files["model"], "--flavor", "sklearn", "--train-data", credit_files["train"]
    )
    assert code == 0, err
    log = PredictionLog(home / "predictions")
    # a log written before ids were checked, or a string feature holding escapes
    log.append(
        "credit-risk",
        1,
        "server-id-1",
        [{"purpose": ESCAPES, "income": 1.0}],
        Outputs(["prediction"], ["i8"], [[1]]),
        1.0,
        client_request_id=f"client{ESCAPES}",
    )
    log.close()
    for args in ((), ("--format", "jsonl"), ("--format", "csv"), ("--request-id", "server-id-1")):
        code, out, err = run("predictions", "credit-risk", *args)
        assert code == 0, err
        for char in (c for c in ESCAPES if not c.isprintable()):
            assert char not in out, (args, repr(char))
        assert "\\u001b" in out and "\\u202e" in out, args
    code, out, _ = run("predictions", "credit-risk", "--request-id", f"client{ESCAPES}", "--format", "jsonl")
    assert code == 0 and out.count("server-id-1") == 1  # the client's id finds the decision too
