"""The ``health_check`` extension: GET on its path answers 200 while the service runs and 503
while it starts or shuts down, as the Collector's extension does, for load balancers and k8s probes."""

from __future__ import annotations

import time

from aiohttp import web

from carbonspan.collector.pipeline_settings import HealthCheckSettings
from carbonspan.collector.receivers.loop_thread import AiohttpServer, LoopThread


class HealthCheck:
    def __init__(self, component_id: str, settings: HealthCheckSettings, loop: LoopThread) -> None:
        self.id = component_id
        self.healthy = False
        self._since = time.time()
        app = web.Application()
        app.router.add_get(settings.path, self._handle)
        self._server = AiohttpServer(loop, app, settings.host, settings.port)

    async def _handle(self, request: web.Request) -> web.Response:
        if self.healthy:
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._since))
            return web.json_response({"status": "Server available", "upSince": since})
        return web.json_response({"status": "Server not available"}, status=503)

    def start(self) -> str:
        return self._server.start()

    def set_healthy(self, healthy: bool) -> None:
        self.healthy = healthy
        if healthy:
            self._since = time.time()

    def stop(self, timeout_s: float) -> None:
        self._server.stop(timeout_s)
