"""Collector memory: RSS of the real collector while it holds 100k spans waiting for energy data.

The load generator of bench/collector_throughput.py sends its requests without any metrics, so the
join holds every prefill and decode span (2 of each request's 5) until its deadline, set to an
hour here; queue, KV-transfer and router spans pass on to the sink. RSS is read from /proc before
any span and once every request has been accepted; per-span bytes = (after - before) / held.

    python bench/collector_memory.py                 # 50k requests -> 100k spans held
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from collector_throughput import PIPELINES, free_port, load_main, rss_mb, sink_main

CONFIG = """
processors:
  carbon:
    deadline: 1h
  carbon_rollup:
    settle: 1s
  batch:
    send_batch_size: 8192
    timeout: 200ms
""" + PIPELINES.format(port="{port}", sink="{sink}", traces="carbon, carbon_rollup, batch", metrics="carbon") + \
    "  telemetry:\n    logs: {level: warn}\n"
HELD_PER_REQUEST = 2  # prefill + decode wait for energy data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000, help="requests sent (5 spans each, 2 held)")
    args = parser.parse_args()
    ctx = mp.get_context("fork")
    sink_port, port = free_port(), free_port()
    spans, enriched = ctx.Value("q", 0), ctx.Value("q", 0)
    sink_ready, sink_stop = ctx.Event(), ctx.Event()
    sink = ctx.Process(target=sink_main, args=(sink_port, spans, enriched, sink_ready, sink_stop, None), daemon=True)
    sink.start()
    sink_ready.wait(30)
    workdir = Path(tempfile.mkdtemp(prefix="cs-mem-"))
    config = workdir / "config.yaml"
    config.write_text(CONFIG.replace("{port}", str(port)).replace("{sink}", str(sink_port)))
    collector = subprocess.Popen([sys.executable, "-m", "carbonspan.collector.cli", "collector", "--config",
                                  str(config)], stdout=subprocess.DEVNULL, stderr=open(workdir / "log", "wb"))
    started, done = ctx.Value("d", 0.0), ctx.Value("d", 0.0)
    ready, go = ctx.Event(), ctx.Event()
    load = ctx.Process(target=load_main, args=(port, args.requests, 500.0, 4, started, ready, go, done, None, False),
                       daemon=True)
    load.start()
    try:
        if not ready.wait(180):
            raise RuntimeError(f"collector did not come up: {(workdir / 'log').read_text()[-2000:]}")
        time.sleep(1.0)
        before = rss_mb(collector.pid)
        go.set()
        load.join(600)
        time.sleep(3.0)  # the roll-up's settle and the batch timeout: passed-through spans reach the sink
        after = rss_mb(collector.pid)
        sent = args.requests * 5
        held = sent - spans.value
        print(f"spans sent: {sent}  passed to the sink: {spans.value}  held by the join: {held} "
              f"(expected {args.requests * HELD_PER_REQUEST})")
        print(f"collector RSS before: {before:.0f} MB  with {held} spans held: {after:.0f} MB  "
              f"per held span: {(after - before) * 2**20 / max(held, 1):,.0f} bytes "
              f"(includes the passed-through spans' leftovers and the roll-up's memory of completed traces)")
    finally:
        collector.terminate()
        try:
            collector.wait(60)
        except subprocess.TimeoutExpired:
            collector.kill()
        sink_stop.set()
        sink.join(5)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
