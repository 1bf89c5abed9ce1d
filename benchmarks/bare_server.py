"""A bare ASGI scoring server: the yardstick ``serving.py`` measures scoregate against.

No validation, no prediction log, no metrics, no routing or hot swap: read the body,
take ``rows[0]``, queue it, and score whatever queued up during the loop turn in one
``predict_proba`` call on the event loop (greedy batching, no timer). Everything
scoregate adds on top of this is what the ratio in the benchmark prices.

    BARE_MODEL=model.joblib uvicorn bare_server:app --workers 2 --loop uvloop --http httptools
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import joblib
import numpy as np
import orjson
from threadpoolctl import threadpool_limits

MODEL = joblib.load(os.environ["BARE_MODEL"])
NAMES = [f"f{i}" for i in range(int(os.environ.get("BARE_FEATURES", "20")))]
HEADERS = [(b"content-type", b"application/json")]
_pending: list[tuple[dict[str, float], asyncio.Future[list[float]]]] = []
_scheduled = False
threadpool_limits(1)


def _drain() -> None:
    global _scheduled
    _scheduled = False
    batch = _pending[:]
    _pending.clear()
    matrix = np.array([[row[name] for name in NAMES] for row, _ in batch], dtype=np.float64)
    for (_, future), proba in zip(batch, MODEL.predict_proba(matrix).tolist(), strict=True):
        if not future.done():
            future.set_result(proba)


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _scheduled
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["method"] == "GET":  # readiness
        body = b'{"ready":true}'
    else:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        row = orjson.loads(b"".join(chunks))["rows"][0]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[float]] = loop.create_future()
        _pending.append((row, future))
        if not _scheduled:
            _scheduled = True
            loop.call_soon(_drain)
        proba = await future
        body = orjson.dumps({"predictions": [{"proba_0": proba[0], "proba_1": proba[1]}]})
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": body})
