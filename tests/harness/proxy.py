"""A TCP proxy a test can cut: the network between the bots and their homeserver goes away
while agents, connected directly, keep talking to it."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from tests.harness.servers import free_port


class CuttableProxy:
    """Forwards 127.0.0.1:``port`` to ``target_port``; ``cut()`` drops every connection and
    refuses new ones (as a dead link would), ``restore()`` accepts them again."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.restore()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    def cut(self) -> None:
        asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port, reuse_address=True)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect_upstream(writer)
        if upstream is None:
            return
        upstream_reader, upstream_writer = upstream
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    async def _connect_upstream(
        self, writer: asyncio.StreamWriter,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The connection to the real server, or None (the client's connection dropped)."""
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return None
        self._writers |= {writer, upstream_writer}
        return upstream_reader, upstream_writer

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(1 << 16):
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()


class HoldingProxy(CuttableProxy):
    """Also holds back the answer to a chosen HTTP request (``hold(b"MOVE ")``): the server has
    done it, the client never hears so — the moment a crash hurts most."""

    def __init__(self, target_port: int) -> None:
        self._hold: bytes | None = None
        self.held = threading.Event()
        super().__init__(target_port)

    def hold(self, request_start: bytes) -> None:
        self.held.clear()
        self._hold = request_start

    def release(self) -> None:
        self._hold = None

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect_upstream(writer)
        if upstream is None:
            return
        upstream_reader, upstream_writer = upstream
        holding = asyncio.Event()

        async def requests() -> None:
            while chunk := await reader.read(1 << 16):
                if self._hold is not None and chunk.startswith(self._hold):
                    holding.set()
                upstream_writer.write(chunk)
                await upstream_writer.drain()

        async def answers() -> None:
            while chunk := await upstream_reader.read(1 << 16):
                if holding.is_set():
                    self.held.set()  # done by the server, never told to the client
                    continue
                writer.write(chunk)
                await writer.drain()

        with contextlib.suppress(ConnectionError, OSError):
            await asyncio.gather(requests(), answers())
        for end in (writer, upstream_writer):
            self._writers.discard(end)
            with contextlib.suppress(Exception):
                end.close()


class DelayingProxy(CuttableProxy):
    """Also holds a chosen HTTP request on its way (``delay(b"PUT ")``) until ``let_go()``: what
    another client does meanwhile reaches the server first — a race, made to happen."""

    def __init__(self, target_port: int) -> None:
        self._delay: bytes | None = None
        self.arrived = threading.Event()
        self._released = asyncio.Event()
        super().__init__(target_port)

    def delay(self, request_start: bytes) -> None:
        self.arrived.clear()
        self._loop.call_soon_threadsafe(self._released.clear)
        self._delay = request_start

    def let_go(self) -> None:
        self._delay = None
        self._loop.call_soon_threadsafe(self._released.set)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect_upstream(writer)
        if upstream is None:
            return
        upstream_reader, upstream_writer = upstream

        async def requests() -> None:
            try:
                while chunk := await reader.read(1 << 16):
                    if self._delay is not None and chunk.startswith(self._delay):
                        self.arrived.set()
                        await self._released.wait()
                    upstream_writer.write(chunk)
                    await upstream_writer.drain()
            except (ConnectionError, OSError):
                pass

        await asyncio.gather(requests(), self._pipe(upstream_reader, writer))
