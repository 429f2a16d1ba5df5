"""A KV connector that is any registered vLLM connector plus per-request transfer timing.

``Carbon<Name>`` (for example ``CarbonNixlConnector``, ``CarbonExampleConnector``) is a subclass
of the registered connector ``<Name>``, made on first lookup, so every behaviour (worker-side
loads and saves, handshakes, stats, class methods, isinstance checks) stays the wrapped
connector's own. Only three scheduler-side hooks are extended, each calling the original first:

- ``update_state_after_alloc`` with external tokens: the transfer into this engine starts now;
- the transfer ends when the worker reports the request in ``finished_recving`` (asynchronous
  connectors such as NIXL), or, for connectors that load synchronously inside the forward step
  (ExampleConnector), when the scheduler next runs after the step that loaded it;
- ``request_finished`` adds the transfer (EngineCore monotonic seconds, bytes, blocks) under
  ``KV_PARAMS_KEY`` in the request's ``kv_transfer_params``, which vLLM carries to the frontend
  where the plugin turns it into the ``kv_transfer`` span.

Use: ``KVTransferConfig(kv_connector="CarbonNixlConnector",
kv_connector_module_path="carbonspan.instrumentation.vllm.connector", ...)``.
"""

from __future__ import annotations

import math
import time
from typing import Any

from carbonspan.instrumentation.vllm.timeline import KvTransfer

PREFIX = "Carbon"
KV_PARAMS_KEY = "carbonspan_kv"
_REMOTE_ENGINE_KEYS = ("remote_engine_id",)


def kv_bytes_per_token(kv_cache_config: Any) -> int:
    """Bytes of KV one token occupies over all layers of the engine (0 if unknown)."""
    total = 0.0
    for group in getattr(kv_cache_config, "kv_cache_groups", None) or ():
        spec = group.kv_cache_spec
        total += spec.page_size_bytes / spec.block_size * len(group.layer_names)
    return round(total)


class _TransferClock:
    """Per-request receive windows on the scheduler side (pure bookkeeping, monotonic seconds)."""

    def __init__(self, bytes_per_token: int, block_size: int, connector: str) -> None:
        self.bytes_per_token = bytes_per_token
        self.block_size = max(1, block_size)
        self.connector = connector
        self._async: dict[str, bool] = {}
        self._open: dict[str, list] = {}  # req_id -> [start_s, tokens, remote, armed]
        self._done: dict[str, KvTransfer] = {}

    def matched(self, req_id: str, load_async: bool) -> None:
        self._async[req_id] = bool(load_async)

    def started(self, req_id: str, tokens: int, remote: str | None, now_s: float) -> None:
        if req_id not in self._open and req_id not in self._done:
            self._open[req_id] = [now_s, tokens, remote, False]

    def scheduled(self, now_s: float) -> None:
        """A new step is being scheduled: synchronous loads armed in the previous one are done."""
        for req_id in [r for r, entry in self._open.items() if entry[3] and not self._async.get(r)]:
            self._finish(req_id, now_s)
        for entry in self._open.values():
            entry[3] = True

    def received(self, req_ids: set[str] | None, now_s: float) -> None:
        for req_id in req_ids or ():
            if req_id in self._open:
                self._finish(req_id, now_s)

    def _finish(self, req_id: str, now_s: float) -> None:
        start, tokens, remote, _ = self._open.pop(req_id)
        self._async.pop(req_id, None)
        blocks = math.ceil(tokens / self.block_size)
        # connectors move whole blocks (NIXL copies the partial last block too)
        self._done[req_id] = KvTransfer(start, now_s, blocks * self.block_size * self.bytes_per_token, blocks,
                                        tokens, self.connector, remote)

    def finished(self, req_id: str, now_s: float) -> KvTransfer | None:
        if req_id in self._open:
            self._finish(req_id, now_s)
        self._async.pop(req_id, None)
        return self._done.pop(req_id, None)


class _CarbonKvMixin:
    _carbon_inner_name: str

    def __init__(self, vllm_config: Any, role: Any, kv_cache_config: Any = None) -> None:
        super().__init__(vllm_config, role, kv_cache_config)  # type: ignore[call-arg]
        extra = vllm_config.kv_transfer_config.kv_connector_extra_config or {}
        self._carbon_storage = extra.get("shared_storage_path")
        self._carbon_clock = _TransferClock(kv_bytes_per_token(kv_cache_config),
                                            vllm_config.cache_config.block_size, self._carbon_inner_name)

    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> tuple[int | None, bool]:
        num, load_async = super().get_num_new_matched_tokens(request, num_computed_tokens)  # type: ignore[misc]
        if num:
            self._carbon_clock.matched(request.request_id, load_async)
        return num, load_async

    def update_state_after_alloc(self, request: Any, blocks: Any, num_external_tokens: int) -> None:
        super().update_state_after_alloc(request, blocks, num_external_tokens)  # type: ignore[misc]
        if num_external_tokens > 0:
            params = request.kv_transfer_params or {}
            remote = next((str(params[k]) for k in _REMOTE_ENGINE_KEYS if params.get(k)), None)
            self._carbon_clock.started(request.request_id, num_external_tokens, remote or self._carbon_storage,
                                       time.monotonic())

    def build_connector_meta(self, scheduler_output: Any) -> Any:
        self._carbon_clock.scheduled(time.monotonic())
        return super().build_connector_meta(scheduler_output)  # type: ignore[misc]

    def update_connector_output(self, connector_output: Any) -> None:
        super().update_connector_output(connector_output)  # type: ignore[misc]
        self._carbon_clock.received(connector_output.finished_recving, time.monotonic())

    def request_finished(self, request: Any, block_ids: Any) -> tuple[bool, dict[str, Any] | None]:
        delay, params = super().request_finished(request, block_ids)  # type: ignore[misc]
        return delay, self._carbon_params(request.request_id, params)

    def request_finished_all_groups(self, request: Any, block_ids: Any) -> tuple[bool, dict[str, Any] | None]:
        delay, params = super().request_finished_all_groups(request, block_ids)  # type: ignore[misc]
        return delay, self._carbon_params(request.request_id, params)

    def _carbon_params(self, req_id: str, params: dict[str, Any] | None) -> dict[str, Any] | None:
        transfer = self._carbon_clock.finished(req_id, time.monotonic())
        if transfer is None:
            return params
        return {**(params or {}), KV_PARAMS_KEY: transfer.to_params()}


_classes: dict[str, type] = {}


def wrap_connector(inner: type) -> type:
    """The timing subclass of a connector class."""
    name = f"{PREFIX}{inner.__name__}"
    if name not in _classes:
        _classes[name] = type(name, (_CarbonKvMixin, inner), {"__module__": __name__, "_carbon_inner_name":
                                                              inner.__name__})
    return _classes[name]


def __getattr__(name: str) -> type:
    """``Carbon<Registered>`` for any connector registered with vLLM's KVConnectorFactory."""
    if not name.startswith(PREFIX) or name == PREFIX:
        raise AttributeError(name)
    from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory

    try:
        inner = KVConnectorFactory.get_connector_class_by_name(name[len(PREFIX):])
    except ValueError as error:
        raise AttributeError(f"{name}: {error}") from error
    return wrap_connector(inner)
