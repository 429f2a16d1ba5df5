"""A small disaggregation proxy: OpenAI-compatible in front of one prefill and one decode engine.

Each completion request goes first to the prefill engine with ``max_tokens=1`` and
``kv_transfer_params={"do_remote_decode": true}``, then to the decode engine with the
``kv_transfer_params`` the prefill engine returned (the NIXL handshake: remote engine, host,
port, block ids). The caller's ``traceparent``/``tracestate`` go to both engines unchanged; when
the caller sent none, the proxy makes one, so that both engines' spans of a request share one
trace. vLLM 0.32 ships no such proxy in its package (only as an example script).

    python -m carbonspan.instrumentation.vllm.proxy --prefill http://p:8100 --decode http://d:8200 --port 8000
"""

from __future__ import annotations

import argparse
import copy
import logging
from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

logger = logging.getLogger(__name__)

TRACE_HEADERS = ("traceparent", "tracestate")
_PREFILL_PARAMS = {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
                   "remote_block_ids": None, "remote_host": None, "remote_port": None}
_ROUTES = ("/v1/completions", "/v1/chat/completions")


def trace_headers(incoming: Any) -> dict[str, str]:
    """The caller's trace context, or a new sampled root context when it sent none."""
    headers = {k: incoming[k] for k in TRACE_HEADERS if k in incoming}
    if "traceparent" not in headers:
        ids = RandomIdGenerator()
        context = trace.SpanContext(ids.generate_trace_id(), ids.generate_span_id(), is_remote=False,
                                    trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
        TraceContextTextMapPropagator().inject(headers, context=trace.set_span_in_context(
            trace.NonRecordingSpan(context)))
    return headers


def prefill_request(body: dict[str, Any]) -> dict[str, Any]:
    request = copy.deepcopy(body)
    request.update(max_tokens=1, stream=False, kv_transfer_params=dict(_PREFILL_PARAMS))
    if "max_completion_tokens" in request:
        request["max_completion_tokens"] = 1
    request.pop("stream_options", None)
    return request


class DisaggProxy:
    def __init__(self, prefill_url: str, decode_url: str, timeout_s: float = 600.0) -> None:
        self.prefill_url = prefill_url.rstrip("/")
        self.decode_url = decode_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application()
        for route in _ROUTES:
            app.router.add_post(route, self.handle)
        app.router.add_get("/health", self.health)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _: web.Application) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def _stop(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def health(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.json()
        headers = trace_headers(request.headers)
        if auth := request.headers.get("Authorization"):
            headers["Authorization"] = auth
        async with self._session.post(self.prefill_url + request.path, json=prefill_request(body),
                                      headers=headers) as prefill:
            if prefill.status != 200:
                return web.Response(status=prefill.status, body=await prefill.read(),
                                    content_type=prefill.content_type)
            kv_params = (await prefill.json()).get("kv_transfer_params")
        decode_body = dict(body)
        if kv_params:
            decode_body["kv_transfer_params"] = kv_params
        async with self._session.post(self.decode_url + request.path, json=decode_body, headers=headers) as decode:
            response = web.StreamResponse(status=decode.status, headers={"Content-Type": decode.content_type})
            await response.prepare(request)
            async for chunk in decode.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefill", required=True, help="base URL of the prefill engine")
    parser.add_argument("--decode", required=True, help="base URL of the decode engine")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    web.run_app(DisaggProxy(args.prefill, args.decode).app(), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
