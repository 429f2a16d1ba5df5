"""Live grid carbon intensity from Electricity Maps, WattTime and the UK Carbon Intensity API.

The carbon join prices every span and must never wait on the network, so the HTTP calls do not
happen in :meth:`LiveIntensityProvider.intensity`: that method only reads a cache. A refresher
thread (``start()`` / ``stop()``) runs an asyncio loop with one aiohttp session and refetches
every location the join has asked about once its cached value is ``ttl`` old. Until the first
answer arrives, and whenever the API fails for longer than a second ``ttl``, the bundled static
table answers with ``fallback=True`` and its own ``source``.

Each API's JSON is the documented one (shapes quoted in the project's api-shapes notes):
Electricity Maps ``GET /v3/carbon-intensity/latest?zone=`` with header ``auth-token``;
WattTime ``GET /login`` (HTTP basic) then ``GET /v3/forecast?region=&signal_type=`` with a bearer
token, first point of the forecast (the current 5-minute interval), lbs/MWh converted to g/kWh;
UK Carbon Intensity ``GET /intensity`` (national, half-hourly; ``actual``, else ``forecast``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from carbonspan.processors.intensity import (
    GridLocation,
    IntensityReading,
    StaticTableProvider,
    lookup_by_region,
    normalise_region_keys,
)

log = logging.getLogger(__name__)

SOURCE_ELECTRICITYMAPS_API = "electricitymaps-api"
SOURCE_WATTTIME_API = "watttime-api"
SOURCE_UK_CARBON_INTENSITY_API = "uk-carbon-intensity-api"

ELECTRICITYMAPS_ENDPOINT = "https://api.electricitymap.org"
WATTTIME_ENDPOINT = "https://api.watttime.org"
UK_CARBON_INTENSITY_ENDPOINT = "https://api.carbonintensity.org.uk"
#: the only zone the UK Carbon Intensity API's national figure covers (Electricity Maps' key).
UK_ZONE = "GB"
#: 1 lb = 453.59237 g and 1 MWh = 1000 kWh (WattTime's units are lbs_co2_per_mwh).
G_PER_KWH_PER_LB_PER_MWH = 0.45359237
WATTTIME_UNITS = "lbs_co2_per_mwh"
#: longest wait before retrying a location whose fetch failed.
MAX_RETRY_S = 30.0


class LiveSourceError(Exception):
    """The API answered, but not with a usable value."""


class LiveSource(Protocol):
    """One API: which key (zone or region id) a location needs, and how to fetch its value."""

    name: str

    def key_for(self, location: GridLocation, table: StaticTableProvider) -> str | None: ...

    async def fetch(self, session: aiohttp.ClientSession, key: str) -> IntensityReading: ...


async def _get_json(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> Any:
    async with session.get(url, **kwargs) as response:
        response.raise_for_status()
        return await response.json(content_type=None)


class ElectricityMapsSource:
    name = SOURCE_ELECTRICITYMAPS_API

    def __init__(self, endpoint: str = ELECTRICITYMAPS_ENDPOINT, api_key: str | None = None):
        self._url = endpoint.rstrip("/") + "/v3/carbon-intensity/latest"
        self._headers = {"auth-token": api_key} if api_key else {}

    def key_for(self, location: GridLocation, table: StaticTableProvider) -> str | None:
        return table.grid_zone(location)

    async def fetch(self, session: aiohttp.ClientSession, key: str) -> IntensityReading:
        body = await _get_json(session, self._url, params={"zone": key}, headers=self._headers)
        try:
            value = float(body["carbonIntensity"])
        except (KeyError, TypeError, ValueError) as exc:
            raise LiveSourceError(f"no carbonIntensity in the answer for zone {key}") from exc
        return IntensityReading(value, self.name, body.get("zone") or key)


class WattTimeSource:
    """WattTime signals (default ``co2_moer``: marginal, not comparable with average intensities).

    Locations map to WattTime region ids (``CAISO_NORTH`` …) through ``regions``, keyed by grid
    zone, ``provider/region`` or ``region``. The login token is renewed on a 401.
    """

    name = SOURCE_WATTTIME_API

    def __init__(self, username: str, password: str, regions: Mapping[str, str],
                 endpoint: str = WATTTIME_ENDPOINT, signal_type: str = "co2_moer"):
        self._endpoint = endpoint.rstrip("/")
        self._auth = aiohttp.BasicAuth(username, password)
        self._regions = normalise_region_keys(regions)
        self._zones = dict(regions)
        self._signal_type = signal_type
        self._token: str | None = None

    def key_for(self, location: GridLocation, table: StaticTableProvider) -> str | None:
        zone = table.grid_zone(location)
        if zone and zone in self._zones:
            return self._zones[zone]
        return lookup_by_region(self._regions, location.provider, location.region)

    async def _login(self, session: aiohttp.ClientSession) -> str:
        body = await _get_json(session, self._endpoint + "/login", auth=self._auth)
        self._token = str(body["token"])
        return self._token

    async def fetch(self, session: aiohttp.ClientSession, key: str) -> IntensityReading:
        params = {"region": key, "signal_type": self._signal_type}
        token = self._token or await self._login(session)
        try:
            body = await _get_json(session, self._endpoint + "/v3/forecast", params=params,
                                   headers={"Authorization": f"Bearer {token}"})
        except aiohttp.ClientResponseError as exc:
            if exc.status != 401:
                raise
            token = await self._login(session)  # tokens expire after 30 minutes
            body = await _get_json(session, self._endpoint + "/v3/forecast", params=params,
                                   headers={"Authorization": f"Bearer {token}"})
        units = body.get("meta", {}).get("units")
        if units != WATTTIME_UNITS or not body.get("data"):
            points = len(body.get("data") or [])
            raise LiveSourceError(f"WattTime answer for {key}: units {units!r}, {points} points")
        value = float(body["data"][0]["value"]) * G_PER_KWH_PER_LB_PER_MWH
        return IntensityReading(value, self.name, key)


class UkCarbonIntensitySource:
    """National Great Britain figure (gCO2/kWh, operational): only locations in zone GB use it."""

    name = SOURCE_UK_CARBON_INTENSITY_API

    def __init__(self, endpoint: str = UK_CARBON_INTENSITY_ENDPOINT):
        self._url = endpoint.rstrip("/") + "/intensity"

    def key_for(self, location: GridLocation, table: StaticTableProvider) -> str | None:
        return UK_ZONE if table.grid_zone(location) == UK_ZONE else None

    async def fetch(self, session: aiohttp.ClientSession, key: str) -> IntensityReading:
        body = await _get_json(session, self._url)
        try:
            intensity = body["data"][0]["intensity"]
            value = intensity["actual"] if intensity.get("actual") is not None else intensity["forecast"]
            return IntensityReading(float(value), self.name, key)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise LiveSourceError("no intensity in the UK Carbon Intensity answer") from exc


@dataclass(frozen=True)
class _Entry:
    reading: IntensityReading
    fetched_at: float


class LiveIntensityProvider:
    """IntensityProvider over a live API: a cache lookup for the join, a thread that fills it.

    A cached value is served for ``2 * ttl`` after it was fetched and refetched once it is
    ``ttl`` old, so a failing API degrades to the static table only after one more ``ttl``.
    The value is the API's latest one whatever the span's ``time_ns``: spans are priced within
    seconds of ending, far less than any grid's hourly step; replays of old data want the CSV
    provider instead.
    """

    def __init__(self, source: LiveSource, table: StaticTableProvider | None = None, *,
                 ttl_s: float = 300.0, timeout_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self._source = source
        self._table = table or StaticTableProvider()
        self._ttl_s = ttl_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._cache: dict[str, _Entry] = {}
        self._keys: dict[GridLocation, str | None] = {}
        self._wanted: set[str] = set()
        self._retry_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stopping = threading.Event()

    # -- the join's side: never blocks ---------------------------------------------------------
    def intensity(self, location: GridLocation, time_ns: int) -> IntensityReading:
        key = self._keys.get(location)
        if key is None and location not in self._keys:
            key = self._keys[location] = self._source.key_for(location, self._table)
        if key is None:
            return self._table.fallback(location)
        entry = self._cache.get(key)
        if entry is not None and self._clock() - entry.fetched_at < 2 * self._ttl_s:
            return entry.reading
        if key not in self._wanted:
            with self._lock:
                self._wanted.add(key)
            self._wake_refresher()
        return self._table.fallback(location)

    # -- the refresher ------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("refresher already started")
        self._started.clear()
        self._stopping.clear()
        name = f"{self._source.name}-refresher"
        self._thread = threading.Thread(target=self._run_thread, name=name, daemon=True)
        self._thread.start()
        self._started.wait()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Cancels any request in flight and joins the thread.

        The flag ends the loop even if a library swallows the cancellation (the loop checks it
        at least every poll interval, at most 1 s).
        """
        thread, loop, task = self._thread, self._loop, self._task
        if thread is None:
            return
        self._stopping.set()
        if loop is not None and task is not None:
            loop.call_soon_threadsafe(task.cancel)
        thread.join(timeout_s)
        if thread.is_alive():  # a daemon thread: it cannot hold the process up at exit
            log.error("%s did not stop within %s s", thread.name, timeout_s)
        self._thread = None

    def __enter__(self) -> LiveIntensityProvider:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wake_refresher(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            loop.call_soon_threadsafe(wake.set)

    def _run_thread(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            self._loop = loop
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._refresh_forever())
            loop.call_soon(self._started.set)
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            self._loop = self._wake = self._task = None
            self._started.set()
            loop.close()

    async def _refresh_forever(self) -> None:
        assert self._wake is not None
        poll_s = min(1.0, self._ttl_s / 4)
        async with aiohttp.ClientSession(timeout=self._timeout) as session:
            while not self._stopping.is_set():
                self._wake.clear()
                await self._refresh_due(session)
                try:
                    async with asyncio.timeout(poll_s):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def _refresh_due(self, session: aiohttp.ClientSession) -> None:
        now = self._clock()
        with self._lock:
            wanted = list(self._wanted)
        due = [key for key in wanted
               if (key not in self._cache or now - self._cache[key].fetched_at >= self._ttl_s)
               and self._retry_at.get(key, 0.0) <= now]
        if due:
            await asyncio.gather(*(self._refresh(session, key) for key in due))

    async def _refresh(self, session: aiohttp.ClientSession, key: str) -> None:
        try:
            reading = await self._source.fetch(session, key)
        except aiohttp.ClientResponseError as exc:
            self._failed(key, f"HTTP {exc.status} {exc.message}", logging.ERROR)
        except (TimeoutError, aiohttp.ClientError) as exc:
            self._failed(key, f"{type(exc).__name__} {exc}".strip(), logging.WARNING)
        except (LiveSourceError, ValueError, KeyError, TypeError) as exc:
            self._failed(key, f"unusable answer: {exc}", logging.ERROR)
        else:
            self._cache[key] = _Entry(reading, self._clock())
            self._retry_at.pop(key, None)

    def _failed(self, key: str, why: str, level: int) -> None:
        self._retry_at[key] = self._clock() + min(self._ttl_s, MAX_RETRY_S)
        log.log(level, "%s: no intensity for %s (%s); the static table stands in",
                self._source.name, key, why)
