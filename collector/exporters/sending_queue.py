"""The Collector's ``sending_queue`` and ``retry_on_failure`` for exporters that talk to a peer.

``put`` only appends to a bounded queue (and, with ``storage_directory``, writes the request to disk
first), so the pipeline never waits on the network. ``num_consumers`` threads send, retrying transient
failures with exponential backoff and jitter (the Collector's defaults: 5 s, x1.5, up to 30 s, for at
most 300 s) and honouring the delay the peer asks for. A full queue drops the new request; a permanent
error or an exhausted retry budget gives the request up. Both are counted and logged, never silent.

On-disk queue: one file per request, written to a temporary name, fsynced and renamed into place, so
a crash leaves either the whole request or nothing; removed once sent or given up. A new queue on the
same directory picks the files up at ``start`` and sends them: at-least-once across restarts.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from carbonspan.collector.config_values import Section
from carbonspan.collector.errors import ConfigError

logger = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{12})-(traces|metrics)-(\d+)\.pb$")


class RetryableError(Exception):
    """The peer may take the request later (unavailable, throttled, timed out)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentError(Exception):
    """Sending the same request again cannot succeed (bad request, unauthenticated...)."""


@dataclass(frozen=True)
class QueueSettings:
    enabled: bool = True
    num_consumers: int = 10
    queue_size: int = 1000
    storage_directory: Path | None = None

    @classmethod
    def from_config(cls, section: Section) -> QueueSettings:
        directory = section.string("storage_directory")
        # ``storage`` names a file_storage extension; the config loader resolves it into storage_directory.
        if section.raw("storage") is not None and not directory:
            raise ConfigError(section.key("storage"), "names a storage extension that was not resolved to a "
                              "directory; declare it under extensions with a directory")
        enabled = section.boolean("enabled", True)
        if directory and not enabled:
            raise ConfigError(section.key("enabled"), "an on-disk queue needs the sending queue enabled")
        return cls(
            enabled=enabled,
            num_consumers=section.positive_int("num_consumers", 10),
            queue_size=section.positive_int("queue_size", 1000),
            storage_directory=Path(directory) if directory else None,
        )


@dataclass(frozen=True)
class RetrySettings:
    enabled: bool = True
    initial_interval_s: float = 5.0
    max_interval_s: float = 30.0
    #: 0 means retry for ever
    max_elapsed_time_s: float = 300.0
    multiplier: float = 1.5
    randomization_factor: float = 0.5

    @classmethod
    def from_config(cls, section: Section) -> RetrySettings:
        return cls(
            enabled=section.boolean("enabled", True),
            initial_interval_s=section.seconds("initial_interval", "5s"),
            max_interval_s=section.seconds("max_interval", "30s"),
            max_elapsed_time_s=section.seconds("max_elapsed_time", "300s", allow_zero=True),
            multiplier=float(section.raw("multiplier", 1.5)),
            randomization_factor=float(section.raw("randomization_factor", 0.5)),
        )


@dataclass(frozen=True)
class Item:
    """One export request, already encoded for the wire."""

    signal: str
    body: bytes
    #: spans or data points in it, for logs and stats
    count: int
    path: Path | None = None


#: sends one item; raises RetryableError or PermanentError (anything else counts as retryable)
Send = Callable[[Item], None]


class SendingQueue:
    def __init__(self, name: str, send: Send, queue: QueueSettings, retry: RetrySettings) -> None:
        self.name = name
        self._send = send
        self._settings = queue
        self._retry = retry
        self._directory = (
            queue.storage_directory / f"exporter_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"
            if queue.storage_directory else None
        )
        self._items: deque[Item] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._abort = threading.Event()
        self._threads: list[threading.Thread] = []
        self._in_flight = 0
        self._reserved = 0  # places taken by puts still writing their file
        self._seq = 0
        self._counts = {"sent": 0, "sent_items": 0, "failed": 0, "failed_items": 0, "retried": 0,
                        "dropped": 0, "dropped_items": 0}

    # --- life cycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._directory is not None:
            self._directory.mkdir(parents=True, exist_ok=True)
            self._load_persisted()
        if not self._settings.enabled:
            return
        for i in range(self._settings.num_consumers):
            thread = threading.Thread(target=self._consume, name=f"{self.name}-sender-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def shutdown(self, timeout_s: float) -> None:
        """Send what is queued until ``timeout_s``; then stop retrying. What is left is lost and
        counted (in memory) or stays on disk for the next start (on-disk queue)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._abort.set()
        for thread in self._threads:
            thread.join(1.0)  # a request in flight ends within its own timeout
        with self._cond:
            left = list(self._items)
            self._items.clear()
        if not left:
            return
        if self._directory is not None:
            logger.warning("%s: %d requests not sent before shutdown stay in %s and are sent at the next start",
                           self.name, len(left), self._directory)
        else:
            self._count("dropped", left)
            logger.error("%s: shutdown timed out; dropped %d requests (%d items) still queued",
                         self.name, len(left), sum(i.count for i in left))

    # --- producer side ----------------------------------------------------------------------------
    def put(self, signal: str, body: bytes, count: int) -> None:
        if not self._settings.enabled:
            self._deliver(Item(signal, body, count))
            return
        with self._cond:
            if self._closing or len(self._items) + self._reserved >= self._settings.queue_size:
                self._count("dropped", [Item(signal, body, count)])
                dropped = self._counts["dropped"]
                if dropped & (dropped - 1) == 0:  # 1st, 2nd, 4th, 8th... drop: loud but not a flood
                    reason = "exporter is shutting down" if self._closing else (
                        f"sending queue is full ({self._settings.queue_size} requests)")
                    logger.warning("%s: %s; dropped a request of %d %s (%d requests dropped so far)",
                                   self.name, reason, count, _unit(signal), dropped)
                return
            # the place is taken now; the (slow, fsynced) file is written without holding the lock
            self._reserved += 1
            self._seq += 1
            seq = self._seq
        try:
            item: Item | None = self._persist(seq, signal, body, count)
        except OSError as error:
            item = None
            self._count("dropped", [Item(signal, body, count)])
            logger.error("%s: cannot write the request to the on-disk queue, dropped %d %s: %s",
                         self.name, count, _unit(signal), error)
        with self._cond:
            self._reserved -= 1
            if item is not None:
                self._items.append(item)
                self._cond.notify()

    def size(self) -> int:
        with self._cond:
            return len(self._items) + self._in_flight

    def stats(self) -> dict[str, int]:
        with self._cond:
            return dict(self._counts)

    # --- consumer side ----------------------------------------------------------------------------
    def _consume(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closing:
                    self._cond.wait()
                if not self._items or self._abort.is_set():
                    return
                item = self._items.popleft()
                self._in_flight += 1
            try:
                self._deliver(item)
            except Exception:  # a consumer must outlive any one request
                logger.exception("%s: unexpected error sending a request of %d %s", self.name, item.count,
                                 _unit(item.signal))
                self._count("failed", [item])
            finally:
                with self._cond:
                    self._in_flight -= 1

    def _deliver(self, item: Item) -> None:
        outcome = self._send_with_retry(item)
        if outcome == "aborted":
            if item.path is None:
                self._count("dropped", [item])
                logger.error("%s: shutdown interrupted the retries of a request of %d %s; dropped",
                             self.name, item.count, _unit(item.signal))
            return  # on disk: the file stays for the next start
        self._count(outcome, [item])
        if item.path is not None:
            item.path.unlink(missing_ok=True)

    def _send_with_retry(self, item: Item) -> str:
        started = time.monotonic()
        backoff = self._retry.initial_interval_s
        while True:
            try:
                self._send(item)
                return "sent"
            except PermanentError as error:
                logger.error("%s: peer refused %d %s for good, not retrying: %s",
                             self.name, item.count, _unit(item.signal), error)
                return "failed"
            except Exception as exc:  # noqa: BLE001 - RetryableError and any transport surprise
                error = exc
                retry_after = getattr(exc, "retry_after_s", None)
            if not self._retry.enabled:
                logger.error("%s: sending %d %s failed and retry_on_failure is off: %s",
                             self.name, item.count, _unit(item.signal), error)
                return "failed"
            jitter = self._retry.randomization_factor * (2 * random.random() - 1)
            delay = max(backoff * (1 + jitter), retry_after or 0.0)
            limit = self._retry.max_elapsed_time_s
            if limit and time.monotonic() + delay - started > limit:
                logger.error("%s: gave up on %d %s after retrying for %.1f s: %s",
                             self.name, item.count, _unit(item.signal), time.monotonic() - started, error)
                return "failed"
            with self._cond:
                self._counts["retried"] += 1
            logger.warning("%s: sending %d %s failed, retrying in %.2f s: %s",
                           self.name, item.count, _unit(item.signal), delay, error)
            if self._abort.wait(delay):
                return "aborted"
            backoff = min(backoff * self._retry.multiplier, self._retry.max_interval_s)

    def _count(self, outcome: str, items: list[Item]) -> None:
        with self._cond:
            self._counts[outcome] += len(items)
            self._counts[f"{outcome}_items"] += sum(i.count for i in items)

    # --- disk -------------------------------------------------------------------------------------
    def _persist(self, seq: int, signal: str, body: bytes, count: int) -> Item:
        if self._directory is None:
            return Item(signal, body, count)
        path = self._directory / f"{seq:012d}-{signal}-{count}.pb"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return Item(signal, body, count, path)

    def _load_persisted(self) -> None:
        assert self._directory is not None
        found = []
        for path in self._directory.iterdir():
            match = _FILE.match(path.name)
            if match:
                found.append((int(match[1]), match[2], int(match[3]), path))
            elif path.suffix == ".tmp":
                path.unlink(missing_ok=True)  # a write cut short by a crash: never acknowledged as queued
        found.sort()
        for seq, signal, count, path in found:
            self._items.append(Item(signal, path.read_bytes(), count, path))
            self._seq = max(self._seq, seq)
        if found:
            logger.info("%s: re-sending %d requests left in %s", self.name, len(found), self._directory)


def _unit(signal: str) -> str:
    return "spans" if signal == "traces" else "data points"
