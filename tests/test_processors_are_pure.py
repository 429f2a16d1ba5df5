"""processors/ is pure logic: no sockets, threads or clock reads (ARCHITECTURE.md, Conventions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROCESSORS = Path(__file__).resolve().parents[1] / "processors"
FORBIDDEN_MODULES = {"socket", "threading", "asyncio", "time", "urllib", "http", "aiohttp", "grpc",
                     "subprocess", "multiprocessing", "concurrent", "requests", "select", "selectors"}
CLOCK_CALLS = {"now", "utcnow", "today", "time_ns", "monotonic", "perf_counter"}


@pytest.mark.parametrize("path", sorted(PROCESSORS.rglob("*.py")), ids=lambda p: p.name)
def test_module_has_no_io_imports_or_clock_reads(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            names = []
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN_MODULES, f"{path.name}:{node.lineno} imports {name}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in CLOCK_CALLS, f"{path.name}:{node.lineno} reads a clock"
