"""SpanGroups puts serialized spans back under the resource and scope they arrived with, one parse
per scope; the messages it builds must equal those built span by span, and the spans' tags (the
join's figures for the roll-up, by position) must follow the spans' order in them."""

from __future__ import annotations

from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from otlp_data import SECOND, T0, SpanSpec, node_resource, spans

from carbonspan.processors import semconv
from carbonspan.processors.otlp import SpanGroups, take_out_spans


def _request(service: str, n: int) -> ResourceSpans:
    rs = spans(node_resource(["gpu-a"], service=service), [
        SpanSpec(semconv.PHASE_DECODE, T0 + i, T0 + SECOND + i, tokens=i + 1, name=f"{service}-{i}") for i in range(n)])
    rs.schema_url = f"https://schemas/{service}"
    other = rs.scope_spans.add(scope=InstrumentationScope(name="second", version="2"), schema_url="s2")
    other.spans.add().CopyFrom(rs.scope_spans[0].spans[0])
    other.spans[0].name = f"{service}-second"
    return rs


def test_spans_go_back_under_their_resource_and_scope_in_first_seen_order():
    a, b = _request("a", 3), _request("b", 2)
    placed = [(b, b.scope_spans[0], 1), (a, a.scope_spans[1], 0), (a, a.scope_spans[0], 2), (b, b.scope_spans[0], 0),
              (a, a.scope_spans[0], 0)]
    groups = SpanGroups()
    for rs, ss, index in placed:
        spans, tags = groups.scope(rs, ss)
        spans.append(ss.spans[index].SerializeToString())
        tags.append(ss.spans[index].name)
    tags: list = ["before"]
    out = groups.build(tags)
    expected = []
    for rs, scopes in ((b, [(b.scope_spans[0], [1, 0])]), (a, [(a.scope_spans[1], [0]), (a.scope_spans[0], [2, 0])])):
        built = ResourceSpans(resource=rs.resource, schema_url=rs.schema_url)
        for ss, indexes in scopes:
            built.scope_spans.append(ScopeSpans(scope=ss.scope, schema_url=ss.schema_url,
                                                spans=[ss.spans[i] for i in indexes]))
        expected.append(built)
    assert out == expected
    assert [s.name for rs in out for ss in rs.scope_spans for s in ss.spans] == ["b-1", "b-0", "a-second", "a-2", "a-0"]
    # each span's tag, appended in the order the messages list the spans (not the order they were added in)
    assert tags == ["before", "b-1", "b-0", "a-second", "a-2", "a-0"]
    assert SpanGroups().build() == []


def test_take_out_spans_deletes_runs_of_evenly_spaced_indexes_as_one_by_one():
    """take_out_spans deletes each run of evenly spaced indexes with one sliced deletion: the spans
    left, and the scopes dropped, are those deleting the indexes one by one from the last leaves."""
    cases = [[], [0], [4], [1, 3, 5, 7, 9], [0, 1, 2, 6, 8, 10, 11], [9, 2, 5, 0], [2, 2, 5], list(range(12))]
    for indexes in cases:
        rs = _request("r", 12)
        ss = rs.scope_spans[0]
        expected = [s.name for s in ss.spans]
        for index in sorted(indexes, reverse=True):
            del expected[index]
        take_out_spans([(rs, ss, list(indexes))])
        left = [s.name for s in rs.scope_spans[0].spans] if expected else None
        assert left == (expected or None), indexes
        assert len(rs.scope_spans) == (2 if expected else 1)


def test_extend_builds_what_appending_one_by_one_builds():
    a, b = _request("a", 3), _request("b", 2)
    placed = [(a, a.scope_spans[0], 0), (a, a.scope_spans[0], 2), (b, b.scope_spans[0], 1), (a, a.scope_spans[1], 0),
              (a, a.scope_spans[0], 1), (b, b.scope_spans[0], 0)]
    items = [(rs, ss, ss.spans[index].SerializeToString()) for rs, ss, index in placed]
    one_by_one, extended = SpanGroups(), SpanGroups()
    for rs, ss, span in items:
        spans, tags = one_by_one.scope(rs, ss)
        spans.append(span)
        tags.append(None)
    extended.extend(items)
    tags: list = []
    assert extended.build(tags) == one_by_one.build() and tags == [None] * len(items)
