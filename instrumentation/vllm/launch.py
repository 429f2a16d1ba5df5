"""Starting instrumented vLLM engines: in-process (``LLMEngine``) or as OpenAI API servers.

The engine arguments the plugin needs are set here in one place: stats on, per-step iteration
details on (the load counters' source), and an OTLP traces endpoint (vLLM keeps a request's
``traceparent`` only when tracing is on). ``tiny_model`` writes a 2-layer Llama config that vLLM
runs on CPU with dummy weights, for demos and tests that must not download anything.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from carbonspan.instrumentation.vllm.connector import PREFIX
from carbonspan.instrumentation.vllm.instrument import ENV_ENABLE

CONNECTOR_MODULE = "carbonspan.instrumentation.vllm.connector"
_TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128, "intermediate_size": 256,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 32,
    "vocab_size": 1000, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "float32", "bos_token_id": 1,
    "eos_token_id": 2,
}
#: what every offline CPU engine here needs (no hub access, a little KV cache memory).
CPU_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}


def tiny_model(directory: str | os.PathLike, tokenizer: bool = False) -> str:
    """Write the tiny model's config.json (head_dim 32: CPU attention rejects 16), and with
    ``tokenizer`` a word-level tokenizer ("w5 w17" -> [5, 17]) for text prompts in the API server."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(_TINY_LLAMA))
    if tokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, _TINY_LLAMA["vocab_size"])}}
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.decoder = decoders.WordPiece(prefix="##")
        tok.save(str(path / "tokenizer.json"))
        (path / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
            "unk_token": "<unk>", "model_max_length": 512}))
    return str(path)


def kv_transfer_config(role: str, connector: str = "ExampleConnector", storage: str | None = None,
                       traced: bool = True) -> dict[str, Any]:
    """KVTransferConfig fields for a prefill ('kv_producer') or decode ('kv_consumer') engine."""
    config: dict[str, Any] = {
        "kv_connector": f"{PREFIX}{connector}" if traced else connector,
        "kv_role": {"prefill": "kv_producer", "decode": "kv_consumer"}[role],
        "kv_buffer_device": "cpu",
    }
    if traced:
        config["kv_connector_module_path"] = CONNECTOR_MODULE
    if storage is not None:
        config["kv_connector_extra_config"] = {"shared_storage_path": storage}
    return config


def engine_kwargs(model: str, otlp_traces_endpoint: str = "http://127.0.0.1:4317", traced: bool = True,
                  **overrides: Any) -> dict[str, Any]:
    """EngineArgs keyword arguments for the tiny CPU model, instrumented when ``traced``."""
    kwargs: dict[str, Any] = dict(model=model, load_format="dummy", skip_tokenizer_init=True, dtype="float32",
                                  max_model_len=512, enforce_eager=True, seed=0, block_size=32,
                                  enable_prefix_caching=False, disable_log_stats=False)
    if traced:
        kwargs.update(otlp_traces_endpoint=otlp_traces_endpoint, enable_logging_iteration_details=True)
    kwargs.update(overrides)
    return kwargs


def start_engine(engine_kwargs: dict[str, Any], traced: bool = True, **sinks: Any) -> Any:
    """An ``LLMEngine`` with the carbonspan stat logger (``sinks``: span_exporter, metrics_sender).

    Runs the plugin's ``register`` in this process first, since ``LLMEngine`` (unlike AsyncLLM
    and the API server) does not load ``vllm.stat_logger_plugins``."""
    for key, value in CPU_ENV.items():
        os.environ.setdefault(key, value)
    from vllm import EngineArgs
    from vllm.config import KVTransferConfig
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.llm_engine import LLMEngine

    from carbonspan.instrumentation.vllm.plugin import CarbonStatLogger, register

    kwargs = dict(engine_kwargs)
    if isinstance(kwargs.get("kv_transfer_config"), dict):
        kwargs["kv_transfer_config"] = KVTransferConfig(**kwargs["kv_transfer_config"])
    loggers = []
    if traced:
        os.environ[ENV_ENABLE] = "1"
        register()
        loggers.append(lambda config, index: CarbonStatLogger(config, index, **sinks))
    return LLMEngine.from_engine_args(EngineArgs(**kwargs), usage_context=UsageContext.ENGINE_CONTEXT,
                                      stat_loggers=loggers)


def engine_instrumentation(engine: Any) -> Any:
    """The EngineInstrumentation of an engine made by ``start_engine`` (to flush or shut down)."""
    from carbonspan.instrumentation.vllm.plugin import CarbonStatLogger

    manager = engine.logger_manager
    for adapter in manager.stat_loggers:
        for stat_logger in getattr(adapter, "per_engine_stat_loggers", {}).values():
            if isinstance(stat_logger, CarbonStatLogger):
                return stat_logger.instrumentation
    raise LookupError("engine has no carbonspan stat logger")


def serve_command(model: str, port: int, otlp_traces_endpoint: str, kv_config: dict[str, Any] | None = None,
                  extra: list[str] | None = None) -> list[str]:
    """argv of an instrumented OpenAI API server for a model with a tokenizer (the ``vllm``
    console script of vllm-cpu is broken, so ``python -m``). Run it with CARBONSPAN_VLLM=1 and
    CPU_ENV in its environment."""
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--port", str(port),
            "--host", "127.0.0.1", "--load-format", "dummy", "--dtype", "float32", "--max-model-len", "512",
            "--enforce-eager", "--block-size", "32", "--no-enable-prefix-caching",
            "--otlp-traces-endpoint", otlp_traces_endpoint, "--enable-logging-iteration-details"]
    if kv_config is not None:
        argv += ["--kv-transfer-config", json.dumps(kv_config)]
    return argv + list(extra or [])


#: vLLM's engines open their own ZMQ ports at random in the system's ephemeral range (Linux:
#: 32768-60999): a port picked there for a server could be taken by one of them before its server
#: binds it ("Address already in use", and an API server that never becomes healthy).
PORT_RANGE = (20000, 32768)


def free_ports(n: int) -> list[int]:
    """n distinct ports of ``PORT_RANGE`` that are free on 127.0.0.1 now."""
    rng = random.Random()
    chosen: list[int] = []
    for _ in range(1000):
        port = rng.randrange(*PORT_RANGE)
        if port in chosen:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.append(port)
        if len(chosen) == n:
            return chosen
    raise OSError(f"no {n} free ports between {PORT_RANGE[0]} and {PORT_RANGE[1]} on 127.0.0.1")


def server_env(role_env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of an instrumented server subprocess: this one + CPU_ENV + the plugin switch,
    with short span-batch delays so spans leave within a fraction of a second, and a minute (not
    the SDK's 10 s) for an export to get through: engines that saturate the machine (a NIXL engine's
    progress thread spins on its core) can starve the collector long enough to lose spans."""
    env = {**os.environ, **CPU_ENV, ENV_ENABLE: "1", "OTEL_BSP_SCHEDULE_DELAY": "200",
           "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "60"}
    env.update(role_env or {})
    return env


def start_server(argv: list[str], env: dict[str, str], log_path: str | os.PathLike) -> subprocess.Popen:
    """Start a server in its own process group (so that ``stop_server`` ends its children too)."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 300.0) -> float:
    """Seconds until ``url``/health answers 200; raises if the process dies or time runs out."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before becoming healthy")
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout_s} s")


def stop_server(process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """SIGINT first (vLLM shuts down and the plugin flushes at exit), SIGKILL if it hangs."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
