"""The sampler's steady schedule on an injected clock, the energy tracker's wrap/reset/power
handling, and the simulated GPU's ground truth and driver-like reports."""

import math
import time

import pytest
from sampler_doubles import Clock

from carbonspan.instrumentation.power.energy import EVENT_RESET, EVENT_WRAP, LOCK_AFTER_TICKS, EnergyTracker
from carbonspan.instrumentation.power.sampler import VERIFY_EVERY_TICKS, PowerSampler
from carbonspan.instrumentation.power.simulated import SimulatedGpu, SimulatedPowerSource
from carbonspan.instrumentation.power.source import GpuInfo, Reading

MS = 1_000_000
S = 1_000_000_000



class SlowSource(SimulatedPowerSource):
    """Each read costs clock time, as a real driver call does."""

    def __init__(self, gpus, clock, read_cost_ns):
        super().__init__(gpus, clock)
        self.read_cost_ns = read_cost_ns
        self.read_times = []

    def read(self, index):
        reading = super().read(index)
        self.read_times.append(reading.time_ns)
        self.clock.t += self.read_cost_ns
        return reading


def run_for(sampler, clock, ticks, stall_at=None, stall_ns=0):
    waits = []

    def wait(seconds):
        waits.append(seconds)
        clock.t += round(seconds * 1e9)
        if len(waits) == stall_at:
            clock.t += stall_ns
        return len(waits) >= ticks

    sampler.run(wait)
    return waits


def test_ticks_stay_on_the_grid_whatever_a_tick_costs():
    clock = Clock(1_000 * S)
    source = SlowSource([SimulatedGpu("L4", clock=clock) for _ in range(2)], clock, read_cost_ns=7 * MS)
    sampler = PowerSampler(source, None, interval_s=0.1, clock=clock, energy_poll_s=None)
    waits = run_for(sampler, clock, ticks=50)
    starts = source.read_times[::2]
    assert starts == [1_000 * S + k * 100 * MS for k in range(50)]  # no drift: sleep to the tick
    assert waits == pytest.approx([0.086] * 50)
    assert sampler.missed_ticks == 0


def test_a_stall_skips_ticks_instead_of_bunching_them():
    clock = Clock(0)
    source = SlowSource([SimulatedGpu("L4", clock=clock)], clock, read_cost_ns=1 * MS)
    sampler = PowerSampler(source, None, interval_s=0.1, clock=clock, energy_poll_s=None)
    run_for(sampler, clock, ticks=10, stall_at=3, stall_ns=350 * MS)
    # The 0.3 s tick woke 350 ms late: it samples at once, then 0.4-0.6 are skipped and the
    # schedule goes on at 0.7 on the same grid.
    assert source.read_times[:6] == [0, 100 * MS, 200 * MS, 650 * MS, 700 * MS, 800 * MS]
    assert sampler.missed_ticks == 3
    assert all(t % (100 * MS) == 0 for t in source.read_times[4:])


def test_threaded_start_stop_samples_and_stops():
    source = SimulatedPowerSource([SimulatedGpu("A10")])
    sink = RecordingSink()
    sampler = PowerSampler(source, sink, interval_s=0.01)
    sampler.start()
    deadline = time.monotonic() + 10
    while len(sink.sums) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    sampler.stop()
    n = len(sink.sums)
    assert sampler._thread is None and n >= 3
    assert [t for _, t, _ in sink.sums] == sorted(t for _, t, _ in sink.sums)


class RecordingSink:
    """The sampler's sink contract (``MetricSink``): handles are prefixes of their points."""

    def __init__(self):
        self.sums, self.gauges = [], []

    def series(self, name, unit, attributes, *, is_sum, monotonic=False):
        return (is_sum,)

    def add_points(self, points):
        for is_sum, start_time_ns, time_ns, value in points:
            if is_sum:
                self.sums.append((start_time_ns, time_ns, value))
            else:
                self.gauges.append((time_ns, value))


def test_wrap_is_told_from_reset():
    gpu = GpuInfo(0, "GPU-w", "H100 SXM", "nvidia", energy_wrap_j=1_000.0)
    tracker = EnergyTracker(gpu)
    tracker.update(Reading(0, 990.0, None))
    wrapped = tracker.update(Reading(1 * S, 50.0, None))  # +60 J in 1 s across the wrap: plausible
    assert (wrapped.event, wrapped.energy_j, wrapped.start_time_ns) == (EVENT_WRAP, pytest.approx(60.0), 0)
    tracker.update(Reading(2 * S, 400.0, None))
    wrapped = tracker.update(Reading(3 * S, 10.0, None))
    assert wrapped.event == EVENT_WRAP  # 610 J in 1 s is plausible for a board, so a wrap
    reset = tracker.update(Reading(3 * S + 10 * MS, 5.0, None))  # 995 J in 10 ms is not: a reset
    assert reset.event == EVENT_RESET and reset.energy_j == 5.0 and reset.start_time_ns == 3 * S + 1
    assert (tracker.wraps, tracker.resets) == (2, 1)


def test_power_readings_are_placed_at_the_centre_of_their_averaging_window():
    clock = Clock(0)
    gpu = SimulatedGpu("H100 SXM", clock=clock, has_energy_counter=False, power_window_ns=S)
    sampler = PowerSampler(SimulatedPowerSource([gpu], clock), None, 0.1, clock)
    for k in range(200):
        gpu.set_utilization(0.5 + 0.5 * math.sin(k / 7), at_ns=k * 100 * MS)
    samples = []
    for k in range(200):
        clock.t = k * 100 * MS
        samples.extend(sampler.sample_once())
    first, last = samples[10], samples[-1]
    assert first.energy_time_ns == first.time_ns - S // 2
    measured = last.energy_j - first.energy_j
    truth = gpu.true_energy_j(first.energy_time_ns, last.energy_time_ns)
    assert measured == pytest.approx(truth, rel=0.005)


def test_simulated_ground_truth_counter_steps_and_window_average():
    clock = Clock(0)
    gpu = SimulatedGpu("A100 SXM", clock=clock)  # idle 55 W, max 400 W
    gpu.set_utilization(1.0, at_ns=2 * S)
    gpu.set_utilization(0.0, at_ns=3 * S)
    assert gpu.true_energy_j(0, 4 * S) == pytest.approx(55 * 3 + 400)
    assert gpu.true_energy_j(2_500 * MS, 3_500 * MS) == pytest.approx(200 + 27.5)
    assert gpu.counter_j(2_150 * MS) == pytest.approx(55 * 2 + 40)  # last update at 2.1 s
    assert gpu.counter_j(2_199 * MS) == gpu.counter_j(2_100 * MS)
    assert gpu.reported_power_w(2_500 * MS) == pytest.approx(0.5 * 55 + 0.5 * 400)  # 1 s average
    clock.t = 3_200 * MS
    assert gpu.read() == gpu.read() and gpu.read().power_w == pytest.approx(0.8 * 400 + 0.2 * 55)
    gpu.set_utilization(0.5, at_ns=1 * S)  # inserted before later changes: the prefix sums follow
    assert gpu.true_energy_j(0, 4 * S) == pytest.approx(55 * 2 + (55 + 172.5) + 400)
    gpu.reload_driver(at_ns=3_500 * MS)
    assert gpu.counter_j(3_600 * MS) == pytest.approx(5.5)


def test_simulated_power_fn_is_integrated_to_well_within_the_tolerance():
    gpu = SimulatedGpu("L40S", clock=lambda: 0, power_fn=lambda t: 200 + 100 * math.sin(t / 3e8))
    a, b = 1 * S, 9 * S
    exact = 200 * 8 + 100 * 0.3 * (math.cos(a / 3e8) - math.cos(b / 3e8))
    assert gpu.true_energy_j(a, b) == pytest.approx(exact, rel=1e-6)
    with pytest.raises(RuntimeError):
        gpu.set_utilization(0.5)


def test_simulate_spec_and_unknown_models():
    source = SimulatedPowerSource.from_spec("H100 SXM x4, MI300X", clock=lambda: 0)
    models = [(g.model, g.vendor) for g in source.gpus()]
    assert models == [("H100 SXM", "nvidia")] * 4 + [("MI300X", "amd")]
    assert len({g.uuid for g in source.gpus()}) == 5
    with pytest.raises(ValueError, match="known"):
        SimulatedGpu("Voodoo 2")


def test_energy_points_are_placed_at_the_counter_updates():
    clock = Clock(0)
    slow = SimulatedGpu("H100 SXM", clock=clock, counter_phase_ns=63 * MS)  # updates at 63, 163, ... ms
    fast = SimulatedGpu("MI300X", clock=clock, counter_update_ns=1 * MS)  # an accumulator that moves every ms
    stalled = SimulatedGpu("L4", clock=clock, counter_update_ns=10 * S)
    sink = RecordingSink()
    sampler = PowerSampler(SimulatedPowerSource([slow, fast, stalled], clock), sink, 0.1, clock, 0.02)
    points = {0: [], 1: [], 2: []}
    for slot in range(100):  # 2 s: ticks every 100 ms, polls every 20 ms
        clock.t = slot * 20 * MS
        for sample in sampler.step(slot):
            if sample.energy_j is not None:
                points[sample.gpu.index].append(sample.energy_time_ns)
    # the first update is seen at the pre-tick poll (80 ms) with no read since 0: stamped there; then armed
    # from each tick, every update is placed between the polls at 60 and 80 ms that bracket it
    assert points[0][:2] == [0, 80 * MS] and points[0][2:] == [k * 100 * MS + 70 * MS for k in range(1, 20)]
    # a counter that changes at every poll is fresh when read: stamped at the reads (the pre-tick poll, the tick)
    assert points[1] == sorted({k * 100 * MS for k in range(20)} | {k * 100 * MS - 20 * MS for k in range(1, 21)})
    assert points[2] == [0, 500 * MS, 1_000 * MS, 1_500 * MS]  # a stalled counter still shows every 5 ticks
    assert len(sink.gauges) == 3 * 20  # power at every tick
    assert sampler.stats[1].polls == 20  # a placed update stops the polls until the one before the next tick
    assert not any(tracker.locked for tracker in sampler.trackers.values())  # 2 s: not yet learned


def true_updates(gpu: SimulatedGpu, until_ns: int) -> list[int]:
    return list(range(gpu.origin_ns + gpu.counter_phase_ns, until_ns, gpu.counter_update_ns))


def test_once_a_counter_keeps_its_place_between_ticks_it_is_not_polled_and_its_points_stay_there():
    """8 GPUs whose counters update every 100 ms at their own phases, the default 50 ms polls:
    after LOCK_AFTER_TICKS ticks the sampler wakes for the ticks only, but for one interval every
    VERIFY_EVERY_TICKS, and every energy point stays at the midpoint of the half-interval holding
    its update, where the polls put it."""
    clock = Clock(0)
    phases = (3, 17, 31, 49, 52, 66, 88, 97)
    gpus = [SimulatedGpu("H100 SXM", clock=clock, counter_phase_ns=phase * MS) for phase in phases]
    sampler = PowerSampler(SimulatedPowerSource(gpus, clock), RecordingSink(), 0.1, clock)
    placed = {index: [] for index in range(len(gpus))}

    def wait(seconds):
        clock.t += round(seconds * 1e9)
        return clock.t > 10 * S

    woken = []
    original_step = sampler.step

    def step(slot):
        woken.append(slot)
        for sample in original_step(slot):
            if sample.energy_j is not None and sample.energy_time_ns > 0:
                placed[sample.gpu.index].append(sample.energy_time_ns)
        return []

    sampler.step = step
    sampler.run(wait)
    learned = [slot for slot in woken if slot * sampler.poll_ns > (LOCK_AFTER_TICKS + 1) * 100 * MS]
    polls = [slot for slot in learned if slot % 2]
    assert all(tracker.locked or tracker.armed for tracker in sampler.trackers.values())  # armed: verifying
    assert polls and all((slot // 2 + 1) % VERIFY_EVERY_TICKS == 0 for slot in polls)  # tick k verifies k, k+1
    ticks = [slot for slot in learned if slot % 2 == 0]
    assert len(polls) <= len(ticks) // VERIFY_EVERY_TICKS + 1
    for index, gpu in enumerate(gpus):
        half = [u - u % (50 * MS) + 25 * MS for u in true_updates(gpu, 10 * S + 1)]
        # the first change is placed at the read that saw it (nothing read before it to bracket it by)
        assert placed[index][1:] == half[1 : len(placed[index])] and len(placed[index]) >= len(half) - 1


def test_a_counter_that_moves_to_another_place_is_polled_again_and_placed_there():
    """The counter's phase jumps by half an interval (a driver reload; a drifting clock does it
    slowly): the next verification finds the change elsewhere and the tracker learns the new place."""
    clock = Clock(0)
    gpu = SimulatedGpu("H100 SXM", clock=clock, counter_phase_ns=20 * MS)
    sampler = PowerSampler(SimulatedPowerSource([gpu], clock), RecordingSink(), 0.1, clock)
    tracker = sampler.trackers[0]
    jump_ns = 3 * S + 50 * MS  # after the lock (2 s), between two verifications
    verified_ns = (-(-(jump_ns // (100 * MS) + 1) // VERIFY_EVERY_TICKS) * VERIFY_EVERY_TICKS - 1) * 100 * MS
    end_slot = (verified_ns + 3 * S) // (50 * MS)  # relearned 2 s after the verification
    placed = []
    for slot in range(end_slot):
        clock.t = slot * 50 * MS
        if clock.t == jump_ns:
            assert tracker.locked
            gpu.counter_phase_ns = 70 * MS  # from now on the counter updates at 70 ms past each tick
        placed += [s.energy_time_ns for s in sampler.step(slot) if s.energy_j is not None]
    assert tracker.locked
    lagging = [t % (100 * MS) for t in placed if jump_ns + 50 * MS < t < verified_ns]
    after = [t % (100 * MS) for t in placed if t > verified_ns + 100 * MS]
    assert set(lagging) == {25 * MS}  # until the verifying interval, placed where the counter was
    assert after and set(after) == {75 * MS}  # then in the second half-interval, where the polls put it


@pytest.mark.parametrize(("update_ms", "interval_s"), [
    (105, 0.1),  # a period 5 % off the interval: its place moves every ~10 ticks
    (1, 0.1),  # an accumulator that moves at every read
    (100, 1.0),  # ten updates per interval: the polls place each of them
])
def test_a_counter_that_does_not_change_once_per_interval_in_one_place_never_locks(update_ms, interval_s):
    clock = Clock(0)
    gpu = SimulatedGpu("H100 SXM", clock=clock, counter_update_ns=update_ms * MS, counter_phase_ns=update_ms * MS // 5)
    sampler = PowerSampler(SimulatedPowerSource([gpu], clock), RecordingSink(), interval_s, clock)
    locked = []
    for slot in range(400):  # 20 s at 10 Hz, 200 s at 1 Hz
        clock.t = slot * sampler.poll_ns
        sampler.step(slot)
        locked.append(sampler.trackers[0].locked)
    assert not any(locked)
    assert sampler.stats[0].polls >= 400 // sampler.polls_per_tick  # at least every pre-tick poll


class StallingSource(SimulatedPowerSource):
    """Its counters stop moving once ``stalled`` (a hung driver), power readings go on."""

    stalled: dict[int, float] = {}

    def read(self, index):
        reading = super().read(index)
        if index in self.stalled:
            reading.energy_j = self.stalled[index]
        return reading

    def read_energy(self, index):
        return self.stalled.get(index, super().read_energy(index))


def test_a_locked_counter_that_stops_moving_is_polled_again_at_the_next_tick():
    clock = Clock(0)
    source = StallingSource([SimulatedGpu("H100 SXM", clock=clock, counter_phase_ns=40 * MS)], clock)
    sampler = PowerSampler(source, RecordingSink(), 0.1, clock)
    tracker = sampler.trackers[0]
    for slot in range(69):
        clock.t = slot * 50 * MS
        sampler.step(slot)
    assert tracker.locked
    source.stalled = {0: source.read_energy(0)}  # as the tick just read it
    for slot in (69, 70):
        clock.t = slot * 50 * MS
        sampler.step(slot)  # nothing to poll; then a tick that finds the counter as it was
    assert not tracker.locked and tracker.armed
