"""``carbonspan demo``: the collector with its default config, a simulated heterogeneous fleet sending
it real OTLP, and the per-request report of what came out (see command.py)."""
