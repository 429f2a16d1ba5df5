"""An asyncio loop on a thread of its own, for the aiohttp servers (HTTP receiver, health check)
in a service whose other parts are threads: they start, bind and stop through it synchronously."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Coroutine
from typing import Any

from aiohttp import web


class LoopThread:
    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, Any], timeout_s: float | None = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


class AiohttpServer:
    """One aiohttp application served on host:port from a LoopThread; ``port`` 0 picks a free one."""

    def __init__(self, loop: LoopThread, app: web.Application, host: str, port: int,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._loop = loop
        self._app = app
        self._host, self._port = host, port
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None
        self.address = ""

    def start(self) -> str:
        self.address = self._loop.call(self._start())
        return self.address

    async def _start(self) -> str:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._ssl)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._runner is not None:
            self._loop.call(self._runner.cleanup(), timeout_s + 1)
            self._runner = None
