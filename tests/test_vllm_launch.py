"""Ports for vLLM servers: outside the ephemeral range, where vLLM's engines open their own ZMQ
sockets at random, and free when picked (docs/vllm.md, "A NIXL pair on one host")."""

from __future__ import annotations

import socket

import pytest

from carbonspan.instrumentation.vllm import launch


def test_free_ports_are_distinct_free_and_below_the_ephemeral_range():
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
    lo, hi = launch.PORT_RANGE
    assert hi <= ephemeral_low
    ports = launch.free_ports(6)
    assert len(set(ports)) == 6
    for port in ports:
        assert lo <= port < hi
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # raises if it was not free


def test_a_port_in_use_is_never_handed_out_and_a_full_range_says_so(monkeypatch):
    def free(port: int) -> bool:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    base = next(p for p in range(24000, 32000, 3) if all(free(p + k) for k in range(3)))
    monkeypatch.setattr(launch, "PORT_RANGE", (base, base + 3))
    with socket.socket() as held:
        held.bind(("127.0.0.1", base + 1))
        held.listen()
        assert sorted(launch.free_ports(2)) == [base, base + 2]
        with pytest.raises(OSError, match="no 3 free ports"):
            launch.free_ports(3)


def test_server_env_gives_span_exports_a_minute():
    env = launch.server_env({"CARBONSPAN_GPU_IDS": "GPU-1"})
    assert env["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"] == "60"
    assert env["CARBONSPAN_GPU_IDS"] == "GPU-1"
