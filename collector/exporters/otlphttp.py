"""``otlphttp``: OTLP over HTTP, as the Collector's otlphttp exporter.

Keys: ``endpoint`` (base URL; ``/v1/traces`` and ``/v1/metrics`` are appended), ``traces_endpoint`` and
``metrics_endpoint`` (full URLs that win over it), ``encoding`` (proto default, json), ``headers``,
``compression`` (gzip default, none), ``timeout`` (30s), ``tls`` (``ca_file``, ``cert_file``,
``key_file``, ``insecure_skip_verify``; ``insecure`` is accepted and means nothing here: the URL's
scheme decides), ``sending_queue``, ``retry_on_failure``.

Retried, as the OTLP spec says: connection errors, timeouts and 429, 502, 503, 504, waiting at least
what ``Retry-After`` asks. Any other non-2xx status is permanent.
"""

from __future__ import annotations

import email.utils
import gzip
import time
from urllib.parse import urlparse

import requests
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from requests.adapters import HTTPAdapter

from carbonspan.collector import otlp_json
from carbonspan.collector.config_values import Section
from carbonspan.collector.errors import ConfigError
from carbonspan.collector.exporters.remote import RemoteExporter
from carbonspan.collector.exporters.sending_queue import Item, PermanentError, RetryableError

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
_PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics"}
_RESPONSES = {"traces": (ExportTraceServiceResponse, "rejected_spans"),
              "metrics": (ExportMetricsServiceResponse, "rejected_data_points")}
_REQUESTS = {"traces": ExportTraceServiceRequest, "metrics": ExportMetricsServiceRequest}
_CONTENT_TYPES = {"proto": "application/x-protobuf", "json": "application/json"}


class OtlpHttpExporter(RemoteExporter):
    default_timeout = "30s"

    def _configure(self, section: Section) -> None:
        base = section.string("endpoint")
        self.urls: dict[str, str] = {}
        for signal, path in _PATHS.items():
            key = f"{signal}_endpoint"
            url = section.string(key) or (base.rstrip("/") + path if base else None)
            if not url:
                raise ConfigError(section.key("endpoint"), "required: base URL of the OTLP/HTTP receiver")
            if urlparse(url).scheme not in ("http", "https") or not urlparse(url).netloc:
                raise ConfigError(section.key(key if section.has(key) else "endpoint"),
                                  f"expected an http:// or https:// URL, got {url!r}")
            self.urls[signal] = url
        self.encoding = section.choice("encoding", tuple(_CONTENT_TYPES), "proto")
        tls = section.section("tls")
        tls.boolean("insecure", False)
        ca_file = tls.string("ca_file")
        self._verify: bool | str = False if tls.boolean("insecure_skip_verify", False) else (ca_file or True)
        cert, key = tls.string("cert_file"), tls.string("key_file")
        if bool(cert) != bool(key):
            raise ConfigError(tls.key("cert_file" if not cert else "key_file"),
                              "cert_file and key_file go together (client certificate)")
        self._cert = (cert, key) if cert else None

    def _open(self) -> None:
        self._session = requests.Session()
        pool = max(1, self.queue_settings.num_consumers)
        self._session.mount("http://", HTTPAdapter(pool_connections=2, pool_maxsize=pool))
        self._session.mount("https://", HTTPAdapter(pool_connections=2, pool_maxsize=pool))
        self._session.headers.update({"Content-Type": _CONTENT_TYPES[self.encoding], **self.headers})
        if self.gzip:
            self._session.headers["Content-Encoding"] = "gzip"

    def _close(self) -> None:
        self._session.close()

    def _wire_body(self, item: Item) -> bytes:
        """Queued (and persisted) bodies are always protobuf, so a restart with other settings still
        sends what was queued; JSON and gzip are applied on the way out."""
        body = item.body
        if self.encoding == "json":
            body = otlp_json.dumps(_REQUESTS[item.signal].FromString(body)).encode()
        return gzip.compress(body, compresslevel=6) if self.gzip else body

    def _send(self, item: Item) -> None:
        url = self.urls[item.signal]
        try:
            response = self._session.post(url, data=self._wire_body(item), timeout=self.timeout_s, verify=self._verify,
                                          cert=self._cert)
        except requests.RequestException as error:
            raise RetryableError(f"{url}: {error}") from None
        if 200 <= response.status_code < 300:
            self._check_partial_success(item, response)
            return
        message = f"{url}: HTTP {response.status_code}: {response.text[:200]!r}"
        if response.status_code in RETRYABLE_STATUS:
            raise RetryableError(message, retry_after_s(response.headers.get("Retry-After")))
        raise PermanentError(message)

    def _check_partial_success(self, item: Item, response: requests.Response) -> None:
        kind, field = _RESPONSES[item.signal]
        if not response.content:
            return
        try:
            if response.headers.get("Content-Type", "").startswith("application/json"):
                parsed = otlp_json.loads(response.content, kind())
            else:
                parsed = kind.FromString(response.content)
        except Exception:  # noqa: BLE001 - a 2xx with an odd body still means "accepted"
            return
        rejected = getattr(parsed.partial_success, field)
        if rejected or parsed.partial_success.error_message:
            self._partial_success(item, rejected, parsed.partial_success.error_message)


def retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: either delay-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
