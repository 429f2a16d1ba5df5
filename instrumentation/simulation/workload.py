"""Requests arriving at the fleet: Poisson arrivals, log-normal prompt and output lengths.

Log-normal lengths are what published LLM serving traces look like (a long right tail of
long prompts and long answers); the medians and spreads are parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WorkloadSpec:
    rate_per_s: float = 3.0
    prompt_median: int = 700
    prompt_sigma: float = 0.8
    prompt_min: int = 16
    prompt_max: int = 8192
    output_median: int = 160
    output_sigma: float = 0.7
    output_min: int = 2  # the first token comes out of prefill; at least one decode step follows
    output_max: int = 1024

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0:
            raise ValueError("rate_per_s must be > 0")
        if not 1 <= self.prompt_min <= self.prompt_max or not 2 <= self.output_min <= self.output_max:
            raise ValueError("need 1 <= prompt_min <= prompt_max and 2 <= output_min <= output_max")


@dataclass(frozen=True)
class Arrival:
    index: int
    time_ns: int
    prompt_tokens: int
    output_tokens: int


def _length(rng: np.random.Generator, median: int, sigma: float, lo: int, hi: int) -> int:
    return int(np.clip(round(median * float(np.exp(sigma * rng.standard_normal()))), lo, hi))


def arrivals(spec: WorkloadSpec, start_ns: int, rng: np.random.Generator) -> Iterator[Arrival]:
    """An endless stream of requests after ``start_ns``, in time order."""
    t = float(start_ns)
    index = 0
    while True:
        t += rng.exponential(1e9 / spec.rate_per_s)
        yield Arrival(
            index=index,
            time_ns=int(t),
            prompt_tokens=_length(rng, spec.prompt_median, spec.prompt_sigma, spec.prompt_min, spec.prompt_max),
            output_tokens=_length(rng, spec.output_median, spec.output_sigma, spec.output_min, spec.output_max),
        )
        index += 1
