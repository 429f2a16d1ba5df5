"""Output tokens/s of an instrumented vLLM engine against the same engine without carbonspan.

Two engine processes with the same config (tiny Llama, dummy weights, CPU, in-process executor):
one traced (CARBONSPAN_VLLM=1, vLLM tracing on, iteration details on, spans and load points
exported over OTLP/gRPC to a receiver in this process), one untraced (stats on, as `vllm serve`
has by default). Rounds alternate between them so that both see the same machine load; the
figure is the median of the rounds. Goal: < 1 % loss.

    .venv/bin/python bench/vllm_overhead.py [--rounds 12] [--requests 16] [--prompt 32] [--output 128]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
MARK = "BENCH "  # vLLM logs to stdout too: our lines carry a prefix


def reply(proc: subprocess.Popen) -> dict:
    for line in proc.stdout:
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise RuntimeError(f"engine process ended (exit {proc.wait()})")


def worker(traced: bool, model: str, endpoint: str, requests: int, prompt: int, output: int) -> None:
    """Engine process: one line in per round, one JSON line out with its output tokens/s."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from carbonspan.instrumentation.vllm import launch

    engine = launch.start_engine(launch.engine_kwargs(model, endpoint, traced=traced), traced=traced)
    in_hooks = [0.0]
    if traced:
        # time spent in the engine's thread inside the plugin's hooks (do_tracing includes vLLM's
        # own llm_request span): a figure that, unlike tokens/s, the machine's noise does not swamp
        from vllm.v1.engine.output_processor import OutputProcessor

        from carbonspan.instrumentation.vllm.plugin import CarbonStatLogger

        def timed(function):
            def wrapper(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    in_hooks[0] += time.perf_counter() - start
            return wrapper

        CarbonStatLogger.record = timed(CarbonStatLogger.record)
        OutputProcessor.do_tracing = timed(OutputProcessor.do_tracing)
    params = SamplingParams(max_tokens=output, ignore_eos=True, temperature=0.0, detokenize=False)
    print(MARK + json.dumps({"ready": True}), flush=True)
    for round_no, _ in enumerate(sys.stdin):
        start, cpu_start, hooks_start = time.perf_counter(), time.process_time(), in_hooks[0]
        for i in range(requests):
            ids = [(11 * i + 7 * j + round_no) % 990 + 3 for j in range(prompt)]
            engine.add_request(f"r{round_no}-{i}", TokensPrompt(prompt_token_ids=ids), params,
                               trace_headers={"traceparent": f"00-{round_no * 1000 + i + 1:032x}-{i + 1:016x}-01"})
        tokens = 0
        while engine.has_unfinished_requests():
            tokens += sum(len(o.outputs[0].token_ids) for o in engine.step() if o.finished)
        wall = time.perf_counter() - start
        print(MARK + json.dumps({"tokens_per_s": tokens / wall, "hook_share": (in_hooks[0] - hooks_start) / wall,
                                 "tokens_per_cpu_s": tokens / (time.process_time() - cpu_start)}), flush=True)
    if traced:
        launch.engine_instrumentation(engine).shutdown()
    engine.engine_core.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--output", type=int, default=128)
    parser.add_argument("--control", action="store_true",
                        help="A/A run: both engines untraced, to see the noise floor of this machine")
    parser.add_argument("--worker", choices=("traced", "untraced"))
    parser.add_argument("--model")
    parser.add_argument("--endpoint")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker == "traced", args.model, args.endpoint, args.requests, args.prompt, args.output)
        return

    from vllm_harness import OtlpSink

    from carbonspan.instrumentation.vllm import launch

    with tempfile.TemporaryDirectory() as tmp, OtlpSink() as sink:
        model = launch.tiny_model(Path(tmp) / "model")
        env = {**os.environ, **launch.CPU_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
               "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": sink.endpoint}
        procs = {}
        for kind in ("untraced", "traced"):
            worker_kind = "untraced" if args.control else kind
            argv = [sys.executable, __file__, "--worker", worker_kind, "--model", model, "--endpoint", sink.endpoint,
                    "--requests", str(args.requests), "--prompt", str(args.prompt), "--output", str(args.output)]
            procs[kind] = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.DEVNULL, text=True)
            reply(procs[kind])  # wait until ready, one engine start at a time
        rates: dict[str, list[float]] = {kind: [] for kind in procs}
        cpu_rates: dict[str, list[float]] = {kind: [] for kind in procs}
        hook_shares: list[float] = []
        for round_no in range(args.rounds + 1):  # round 0 warms both up and is not counted
            order = ("untraced", "traced") if round_no % 2 else ("traced", "untraced")
            for kind in order:
                procs[kind].stdin.write("go\n")
                procs[kind].stdin.flush()
                figures = reply(procs[kind])
                if round_no:
                    rates[kind].append(figures["tokens_per_s"])
                    cpu_rates[kind].append(figures["tokens_per_cpu_s"])
                    if kind == "traced":
                        hook_shares.append(figures["hook_share"])
        for proc in procs.values():
            proc.stdin.close()
            proc.wait(120)
        spans = sum(len(ss.spans) for rs in sink.resource_spans for ss in rs.scope_spans)
    untraced, traced = statistics.median(rates["untraced"]), statistics.median(rates["traced"])
    if args.control:
        print("CONTROL RUN: both engines untraced; the 'loss' below is this machine's noise floor")
    print(f"workload: {args.requests} requests x {args.prompt} prompt x {args.output} output tokens, "
          f"{args.rounds} rounds each, alternating")
    print(f"untraced: {untraced:,.0f} output tok/s (median; rounds {[round(r) for r in rates['untraced']]})")
    print(f"traced:   {traced:,.0f} output tok/s (median; rounds {[round(r) for r in rates['traced']]})")
    print(f"traced/untraced: {traced / untraced:.4f} ({(1 - traced / untraced) * 100:+.2f} % loss); "
          f"spans received: {spans}")
    # wall time swings with whatever else the machine runs; CPU time of the engine process (all its
    # threads, exporters included) does not, so this is the steadier figure on a shared machine
    cpu_untraced, cpu_traced = statistics.median(cpu_rates["untraced"]), statistics.median(cpu_rates["traced"])
    print(f"per CPU-second: untraced {cpu_untraced:,.0f}, traced {cpu_traced:,.0f} output tok/CPU-s; "
          f"traced/untraced: {cpu_traced / cpu_untraced:.4f} ({(1 - cpu_traced / cpu_untraced) * 100:+.2f} % loss)")
    if hook_shares:
        print(f"engine thread time inside the plugin's hooks: {statistics.median(hook_shares) * 100:.2f} % "
              "of the traced rounds' wall time (median)")


if __name__ == "__main__":
    main()
