"""The names a PromQL expression reads, and whether carbonspan's exporter provides them.

A dashboard or alert that queries a metric or label the collector never exports shows an empty
panel or never fires, and nothing tells anyone. This module reads the identifiers out of an
expression (metric names, label matchers, grouping labels, functions) with a real tokeniser, so
that tests can hold every query against the exporter's contract below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from carbonspan.processors import semconv as sc

# --------------------------------------------------------------------------------------------
# The exporter's contract: the labels the collector's Prometheus exporter sets on each metric.
# --------------------------------------------------------------------------------------------
_REQUEST_LABELS = frozenset(
    sc.prometheus_label(a) for a in (sc.GEN_AI_REQUEST_MODEL, sc.SERVICE_NAME, sc.CARBON_REQUEST_ROUTE)
)
_GPU_LABELS = frozenset(sc.prometheus_label(a) for a in (sc.HW_ID, sc.HW_MODEL, sc.CLOUD_REGION))
_SPAN_LABELS = frozenset(
    sc.prometheus_label(a) for a in (sc.CARBON_PHASE, sc.HW_MODEL, sc.CLOUD_REGION, sc.SERVICE_NAME)
)
_INTENSITY_LABELS = frozenset(
    sc.prometheus_label(a)
    for a in (sc.CLOUD_REGION, sc.CARBON_GRID_ZONE, sc.CARBON_INTENSITY_SOURCE, sc.CARBON_INTENSITY_FALLBACK)
)

#: Prometheus name -> label names the exporter sets on it.
EXPORTED_LABELS: Final[dict[str, frozenset[str]]] = {
    sc.PROMETHEUS_NAMES[sc.METRIC_REQUEST_CO2E]: _REQUEST_LABELS,
    sc.PROMETHEUS_NAMES[sc.METRIC_REQUEST_ENERGY]: _REQUEST_LABELS,
    sc.PROMETHEUS_NAMES[sc.METRIC_GPU_ATTRIBUTED_ENERGY]: _GPU_LABELS,
    sc.PROMETHEUS_NAMES[sc.METRIC_GPU_IDLE_ENERGY]: _GPU_LABELS,
    sc.PROMETHEUS_NAMES[sc.METRIC_GPU_MEASURED_ENERGY]: _GPU_LABELS,
    sc.PROMETHEUS_NAMES[sc.METRIC_GPU_LAST_SAMPLE]: _GPU_LABELS,
    sc.PROMETHEUS_NAMES[sc.METRIC_GRID_INTENSITY]: _INTENSITY_LABELS,
    sc.PROMETHEUS_NAMES[sc.METRIC_SPAN_ENERGY]: _SPAN_LABELS,
    sc.PROMETHEUS_NAMES[sc.METRIC_SPAN_CO2E]: _SPAN_LABELS,
    sc.PROMETHEUS_NAMES[sc.METRIC_SPAN_TOKENS]: _SPAN_LABELS,
}

#: histograms are exposed as <name>_bucket (with the extra label ``le``), <name>_sum, <name>_count.
HISTOGRAMS: Final = frozenset(
    sc.PROMETHEUS_NAMES[m] for m in (sc.METRIC_REQUEST_CO2E, sc.METRIC_REQUEST_ENERGY)
)
BUCKET_LABEL: Final = "le"
_HISTOGRAM_SUFFIXES: Final = ("_bucket", "_sum", "_count")

# --------------------------------------------------------------------------------------------
# PromQL vocabulary (Prometheus 2.x/3.x query language reference)
# --------------------------------------------------------------------------------------------
AGGREGATIONS: Final = frozenset(
    "sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio".split()
)
FUNCTIONS: Final = AGGREGATIONS | frozenset(
    """abs absent absent_over_time ceil changes clamp clamp_max clamp_min day_of_month day_of_week
    day_of_year days_in_month delta deriv exp floor histogram_avg histogram_count histogram_fraction
    histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters
    double_exponential_smoothing hour idelta increase irate label_join label_replace ln log2 log10
    minute month predict_linear rate resets round scalar sgn sort sort_desc sort_by_label
    sort_by_label_desc sqrt time timestamp vector year avg_over_time min_over_time max_over_time
    sum_over_time count_over_time quantile_over_time stddev_over_time stdvar_over_time
    last_over_time present_over_time mad_over_time acos acosh asin asinh atan atanh cos cosh sin
    sinh tan tanh deg rad pi""".split()
)
#: keywords followed by a parenthesised list of label names.
GROUPING_KEYWORDS: Final = frozenset("by without on ignoring group_left group_right".split())
KEYWORDS: Final = frozenset("and or unless bool offset atan2 inf nan start end".split())
MATCH_OPERATORS: Final = frozenset(("=", "!=", "=~", "!~"))

_TOKEN = re.compile(
    r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    |(?P<variable>\$\{[^}]*\}|\$\w+)
    |(?P<duration>(?:\d+(?:ms|[smhdwy]))+\b)
    |(?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<identifier>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<operator>=~|!~|!=|==|>=|<=|[-+*/%^=<>@,(){}\[\]])
    |(?P<space>\s+)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str


@dataclass
class Selector:
    """One vector selector: ``metric{label="..."}``; metric is None for a bare ``{...}``."""

    metric: str | None
    labels: list[str] = field(default_factory=list)


@dataclass
class Names:
    selectors: list[Selector] = field(default_factory=list)
    grouping_labels: list[str] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)


def tokenize(expr: str) -> list[Token]:
    """PromQL tokens without whitespace; Grafana variables (``$model``, ``$__rate_interval``) are
    tokens of their own, since dashboards put them where PromQL expects strings and durations."""
    tokens: list[Token] = []
    position = 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise ValueError(f"cannot tokenise {expr[position:]!r} in {expr!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append(Token(kind, match.group()))
        position = match.end()
    return tokens


def names(expr: str) -> Names:
    """Metric names, label names and functions that ``expr`` refers to."""
    tokens = tokenize(expr)
    _check_balanced(tokens, expr)
    found = Names()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        following = tokens[i + 1].text if i + 1 < len(tokens) else None
        if token.text == "[":
            i = _after_closing(tokens, i, "[", "]")
            continue
        if token.text == "{":
            selector = Selector(None)
            i = _read_matchers(tokens, i, selector)
            found.selectors.append(selector)
            continue
        if token.kind != "identifier":
            i += 1
            continue
        if token.text in GROUPING_KEYWORDS:
            if following == "(":
                end = _after_closing(tokens, i + 1, "(", ")")
                found.grouping_labels += [t.text for t in tokens[i + 2 : end - 1] if t.kind == "identifier"]
                i = end
            else:
                i += 1
        elif following == "(" or (token.text in AGGREGATIONS and following in ("by", "without")):
            found.functions.append(token.text)
            i += 1
        elif token.text.lower() in KEYWORDS:
            i += 1
        else:
            selector = Selector(token.text)
            i += 1
            if following == "{":
                i = _read_matchers(tokens, i, selector)
            found.selectors.append(selector)
    return found


_CLOSING = {"(": ")", "[": "]", "{": "}"}


def _check_balanced(tokens: list[Token], expr: str) -> None:
    expected: list[str] = []
    for token in tokens:
        if token.text in _CLOSING:
            expected.append(_CLOSING[token.text])
        elif token.text in _CLOSING.values() and (not expected or expected.pop() != token.text):
            raise ValueError(f"unbalanced {token.text!r} in {expr!r}")
    if expected:
        raise ValueError(f"unbalanced brackets in {expr!r}: {''.join(reversed(expected))!r} missing")


def _after_closing(tokens: list[Token], start: int, opening: str, closing: str) -> int:
    """Index just after the bracket that closes the one at ``start`` (brackets are balanced)."""
    depth = 0
    for i in range(start, len(tokens)):
        depth += (tokens[i].text == opening) - (tokens[i].text == closing)
        if depth == 0:
            return i + 1
    return len(tokens)


def _read_matchers(tokens: list[Token], start: int, selector: Selector) -> int:
    end = _after_closing(tokens, start, "{", "}")
    for i in range(start + 1, end - 1):
        if tokens[i].kind == "identifier" and tokens[i + 1].text in MATCH_OPERATORS:
            selector.labels.append(tokens[i].text)
    return end


def base_metric(metric: str) -> str:
    """The exported metric a series name belongs to (``<histogram>_bucket`` -> ``<histogram>``)."""
    for suffix in _HISTOGRAM_SUFFIXES:
        if metric.endswith(suffix) and metric.removesuffix(suffix) in HISTOGRAMS:
            return metric.removesuffix(suffix)
    return metric


def problems(expr: str) -> list[str]:
    """Why ``expr`` would query something carbonspan does not export (empty when it is fine)."""
    try:
        found = names(expr)
    except ValueError as error:
        return [str(error)]
    issues = [f"unknown function {f!r}" for f in found.functions if f not in FUNCTIONS]
    available: set[str] = set()
    for selector in found.selectors:
        if selector.metric is None:
            issues.append(f"selector without a metric name: labels {selector.labels}")
            continue
        base = base_metric(selector.metric)
        if base not in EXPORTED_LABELS or (base in HISTOGRAMS and base == selector.metric):
            issues.append(f"metric {selector.metric!r} is not a carbonspan metric with known labels")
            continue
        labels = EXPORTED_LABELS[base] | ({BUCKET_LABEL} if selector.metric.endswith("_bucket") else set())
        available |= labels
        issues += [
            f"{selector.metric!r} has no label {label!r}" for label in selector.labels if label not in labels
        ]
    issues += [
        f"grouping label {label!r} is on none of the queried metrics"
        for label in found.grouping_labels
        if label not in available
    ]
    return issues
