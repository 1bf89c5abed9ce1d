"""A small TCP proxy on a stable port whose upstream can be switched without dropping requests.

It runs as its own process (``python -m scoregate.packaging.proxy --listen PORT --state FILE``)
so it outlives the command that started it. The upstream is read from the JSON state file
(``{"upstream": "127.0.0.1:PORT", "generation": N}``, replaced atomically by the deployer)
and re-read when the file changes; the generation applied is written to ``FILE.applied``,
so the deployer knows when new connections go to the new container. Connections already
open keep their upstream until they close.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from pathlib import Path


class SwitchableProxy:
    def __init__(self, state: Path) -> None:
        self.state = Path(state)
        self.upstream: tuple[str, int] | None = None
        self.generation = -1
        self._mtime = -1

    def reload(self) -> None:
        try:
            stat = self.state.stat()
        except FileNotFoundError:
            return
        if stat.st_mtime_ns == self._mtime:
            return
        try:
            data = json.loads(self.state.read_text())
        except (OSError, ValueError):
            return  # the writer replaces the file atomically; a bad file keeps the current upstream
        self._mtime = stat.st_mtime_ns
        host, _, port = str(data["upstream"]).rpartition(":")
        self.upstream = (host, int(port))  # one assignment: new connections see old or new, never half
        self.generation = int(data.get("generation", 0))
        applied = self.state.with_name(self.state.name + ".applied")
        partial = applied.with_name(applied.name + ".partial")
        partial.write_text(str(self.generation))
        os.replace(partial, applied)

    async def watch(self, interval: float = 0.05) -> None:
        while True:
            self.reload()
            await asyncio.sleep(interval)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = self.upstream
        if upstream is None:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*upstream)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def serve(listen_host: str, listen_port: int, state: Path) -> None:
    proxy = SwitchableProxy(state)
    # bind first: the ``.applied`` file then also means "listening"
    server = await asyncio.start_server(proxy.handle, listen_host, listen_port, reuse_address=True)
    proxy.reload()
    async with server:
        await asyncio.gather(server.serve_forever(), proxy.watch())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scoregate-proxy")
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.listen, args.state))


if __name__ == "__main__":
    main()
