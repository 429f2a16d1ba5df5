"""Live intensity providers against real aiohttp servers on 127.0.0.1 speaking the APIs' documented JSON."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

import pytest
from aiohttp import web

from carbonspan.collector import intensity_live
from carbonspan.collector.intensity_config import intensity_provider_from_config
from carbonspan.collector.intensity_live import (
    G_PER_KWH_PER_LB_PER_MWH,
    ElectricityMapsSource,
    LiveIntensityProvider,
    UkCarbonIntensitySource,
    WattTimeSource,
)
from carbonspan.processors.intensity import GridLocation, StaticTableProvider

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T0 = 1_700_000_000 * 10**9
FRANKFURT = GridLocation("aws", "eu-central-1", None)  # mapped to zone DE
BERLIN_NODE = GridLocation(None, None, "DE")
LONDON = GridLocation("aws", "eu-west-2", None)  # mapped to zone GB
N_CALIFORNIA = GridLocation("aws", "us-west-1", None)  # mapped to zone US-CAL-CISO

# Electricity Maps /v3/carbon-intensity/latest, official docs example (api-shapes.md, section 1)
EM_LATEST = {
    "zone": "DE", "carbonIntensity": 302, "datetime": "2018-04-25T18:07:00.350Z",
    "updatedAt": "2018-04-25T18:07:01.000Z", "createdAt": "2018-04-25T18:07:01.000Z",
    "emissionFactorType": "lifecycle", "isEstimated": True, "estimationMethod": "TIME_SLICER_AVERAGE",
}
# WattTime /v3/forecast, official spec example cut to 2 points (api-shapes.md, section 2)
WT_FORECAST = {
    "data": [{"point_time": "2022-07-15T00:00:00+00:00", "value": 870},
             {"point_time": "2022-07-15T00:05:00+00:00", "value": 860}],
    "meta": {"data_point_period_seconds": 300, "region": "CAISO_NORTH", "signal_type": "co2_moer",
             "model": {"date": "2023-03-01"}, "units": "lbs_co2_per_mwh",
             "generated_at_period_seconds": 300, "generated_at": "2022-07-15T00:00:00+00:00"},
}
# UK Carbon Intensity /intensity, official docs example (api-shapes.md, section 3)
UK_INTENSITY = {"data": [{"from": "2018-01-20T12:00Z", "to": "2018-01-20T12:30Z",
                          "intensity": {"forecast": 266, "actual": 263, "index": "moderate"}}]}


class LocalApi:
    """An aiohttp server on 127.0.0.1 in its own thread; counts the requests per path."""

    def __init__(self, routes: dict[str, Handler]):
        self.requests: Counter[str] = Counter()
        self._routes = routes
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.url = ""

    def __enter__(self) -> LocalApi:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        assert not self._thread.is_alive()

    def _serve(self) -> None:
        self._loop = loop = asyncio.new_event_loop()
        app = web.Application()
        for path, handler in self._routes.items():
            app.router.add_get(path, self._counted(path, handler))
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        pending = asyncio.all_tasks(loop)  # handlers still sleeping (the slow-API tests)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    def _counted(self, path: str, handler: Handler) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.requests[path] += 1
            return await handler(request)
        return handle


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def electricitymaps_handler(api_key: str = "secret", delay_s: float = 0.0) -> Handler:
    async def latest(request: web.Request) -> web.Response:
        await asyncio.sleep(delay_s)
        if request.headers.get("auth-token") != api_key:
            return web.json_response({"error": "Invalid auth-token"}, status=401)
        return web.json_response(dict(EM_LATEST, zone=request.query["zone"]))
    return latest


@pytest.fixture
def table() -> StaticTableProvider:
    return StaticTableProvider()


@pytest.fixture
def no_refresher_left() -> Iterator[None]:
    yield
    assert not [t for t in threading.enumerate() if t.name.endswith("-refresher")]


def test_electricitymaps_value_parsed_and_cache_honoured(table, no_refresher_left):
    path = "/v3/carbon-intensity/latest"
    with LocalApi({path: electricitymaps_handler()}) as api:
        source = ElectricityMapsSource(api.url, api_key="secret")
        with LiveIntensityProvider(source, table, ttl_s=300, timeout_s=2) as live:
            first = live.intensity(FRANKFURT, T0)  # cold cache: the table answers, flagged
            assert first.fallback and first.source.startswith("electricitymaps-yearly:")
            assert first == table.fallback(FRANKFURT)
            wait_until(lambda: not live.intensity(FRANKFURT, T0).fallback)
            reading = live.intensity(FRANKFURT, T0)
            assert (reading.gco2e_per_kwh, reading.zone) == (302.0, "DE")
            assert reading.source == "electricitymaps-api" and reading.year is None
            # same zone from another location, many lookups, several refresher cycles: no new request
            for _ in range(1000):
                assert live.intensity(BERLIN_NODE, T0) == reading
            time.sleep(0.3)
            assert api.requests[path] == 1


def test_electricitymaps_refetches_after_ttl(table, no_refresher_left):
    path = "/v3/carbon-intensity/latest"
    with LocalApi({path: electricitymaps_handler()}) as api:
        with LiveIntensityProvider(ElectricityMapsSource(api.url, "secret"), table, ttl_s=0.2) as live:
            live.intensity(FRANKFURT, T0)
            wait_until(lambda: api.requests[path] >= 3)
            assert live.intensity(FRANKFURT, T0).gco2e_per_kwh == 302.0


def test_timeout_falls_back_to_the_table_flagged(table, caplog, no_refresher_left):
    path = "/v3/carbon-intensity/latest"
    with LocalApi({path: electricitymaps_handler(delay_s=2.0)}) as api:
        with LiveIntensityProvider(ElectricityMapsSource(api.url, "secret"), table, timeout_s=0.2) as live:
            live.intensity(FRANKFURT, T0)
            wait_until(lambda: "TimeoutError" in caplog.text)
            reading = live.intensity(FRANKFURT, T0)
            assert reading.fallback and reading == table.fallback(FRANKFURT)
            assert reading.gco2e_per_kwh == table.intensity(FRANKFURT, T0).gco2e_per_kwh
            assert api.requests[path] == 1  # no hammering: the retry waits


def test_401_falls_back_flagged_and_logs_an_error(table, caplog, no_refresher_left):
    path = "/v3/carbon-intensity/latest"
    with LocalApi({path: electricitymaps_handler(api_key="secret")}) as api:
        with LiveIntensityProvider(ElectricityMapsSource(api.url, "wrong"), table) as live:
            live.intensity(FRANKFURT, T0)
            wait_until(lambda: any(r.name == intensity_live.__name__ and r.levelno == logging.ERROR
                                   for r in caplog.records))
            assert "HTTP 401" in caplog.text and "DE" in caplog.text
            reading = live.intensity(FRANKFURT, T0)
            assert reading.fallback and reading.source.startswith("electricitymaps-yearly:")


def test_stop_cancels_a_request_in_flight(table, no_refresher_left):
    path = "/v3/carbon-intensity/latest"
    with LocalApi({path: electricitymaps_handler(delay_s=5.0)}) as api:
        live = LiveIntensityProvider(ElectricityMapsSource(api.url, "secret"), table, timeout_s=10)
        live.start()
        live.intensity(FRANKFURT, T0)
        wait_until(lambda: api.requests[path] == 1)
        started = time.monotonic()
        live.stop()
        assert time.monotonic() - started < 1.0
        assert live.intensity(FRANKFURT, T0).fallback  # still answers, from the table
        live.start()  # and can be started again
        live.stop()


def test_watttime_login_bearer_token_and_unit_conversion(table, no_refresher_left):
    issued = iter(["token-1", "token-2"])
    valid: set[str] = set()

    async def login(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Basic dXNlcjpwYXNz":  # user:pass
            return web.json_response({"error": "bad credentials"}, status=401)
        token = next(issued)
        valid.clear()
        valid.add(token)
        return web.json_response({"token": token})

    async def forecast(request: web.Request) -> web.Response:
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in valid:
            return web.json_response({"error": "expired"}, status=401)
        assert (request.query["region"], request.query["signal_type"]) == ("CAISO_NORTH", "co2_moer")
        return web.json_response(WT_FORECAST)

    with LocalApi({"/login": login, "/v3/forecast": forecast}) as api:
        source = WattTimeSource("user", "pass", {"US-CAL-CISO": "CAISO_NORTH"}, endpoint=api.url)
        with LiveIntensityProvider(source, table, ttl_s=0.2) as live:
            assert live.intensity(N_CALIFORNIA, T0).fallback
            wait_until(lambda: not live.intensity(N_CALIFORNIA, T0).fallback)
            reading = live.intensity(N_CALIFORNIA, T0)
            assert reading.gco2e_per_kwh == pytest.approx(870 * 0.45359237) == 870 * G_PER_KWH_PER_LB_PER_MWH
            assert (reading.source, reading.zone) == ("watttime-api", "CAISO_NORTH")
            valid.clear()  # the token expires: the next refresh logs in again
            wait_until(lambda: api.requests["/login"] == 2 and api.requests["/v3/forecast"] >= 4)
            # a location with no WattTime region: the table, flagged, without a request
            assert live.intensity(FRANKFURT, T0) == table.fallback(FRANKFURT)


def test_uk_carbon_intensity_actual_then_forecast_and_gb_only(table, no_refresher_left):
    body = {"value": UK_INTENSITY}

    async def intensity(request: web.Request) -> web.Response:
        return web.json_response(body["value"])

    with LocalApi({"/intensity": intensity}) as api:
        with LiveIntensityProvider(UkCarbonIntensitySource(api.url), table, ttl_s=0.2) as live:
            live.intensity(LONDON, T0)
            wait_until(lambda: not live.intensity(LONDON, T0).fallback)
            reading = live.intensity(LONDON, T0)
            assert (reading.gco2e_per_kwh, reading.zone) == (263.0, "GB")
            assert reading.source == "uk-carbon-intensity-api"
            unsettled = {"data": [{"from": "2023-03-15T00:00Z", "to": "2023-03-15T00:30Z",
                                   "intensity": {"forecast": 185, "actual": None, "index": "moderate"}}]}
            body["value"] = unsettled
            wait_until(lambda: live.intensity(LONDON, T0).gco2e_per_kwh == 185.0)
            assert live.intensity(FRANKFURT, T0) == table.fallback(FRANKFURT)
            requests = api.requests["/intensity"]
    assert requests >= 2


def test_live_provider_from_config_talks_to_the_configured_endpoint(no_refresher_left):
    with LocalApi({"/v3/carbon-intensity/latest": electricitymaps_handler("k")}) as api:
        section = {"endpoint": api.url, "api_key": "k", "ttl": "5m"}
        provider = intensity_provider_from_config({"provider": "electricitymaps", "electricitymaps": section})
        assert isinstance(provider, LiveIntensityProvider)
        with provider:
            provider.intensity(GridLocation(None, None, "FR"), 0)
            wait_until(lambda: not provider.intensity(GridLocation(None, None, "FR"), 0).fallback)
        assert provider.intensity(GridLocation(None, None, "FR"), 0).gco2e_per_kwh == 302.0
