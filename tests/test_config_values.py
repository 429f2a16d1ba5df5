import pytest

from carbonspan.collector.config_values import parse_duration_ns, parse_endpoint, parse_positive
from carbonspan.collector.errors import ConfigError


@pytest.mark.parametrize(("text", "ns"), [("5s", 5 * 10**9), ("200ms", 2 * 10**8), ("1m30s", 90 * 10**9),
                                           ("1.5h", 5400 * 10**9), (2, 2 * 10**9), ("0s", 0)])
def test_durations(text, ns):
    assert parse_duration_ns("timeout", text) == ns


@pytest.mark.parametrize("text", ["5", "five seconds", "5 s", "-1s", True, -3])
def test_bad_duration_names_the_key(text):
    with pytest.raises(ConfigError, match="^exporters.otlp.timeout: expected a duration|cannot be negative"):
        parse_duration_ns("exporters.otlp.timeout", text)


def test_endpoints():
    assert parse_endpoint("endpoint", "127.0.0.1:4317") == ("127.0.0.1", 4317)
    assert parse_endpoint("endpoint", "[::1]:0") == ("::1", 0)
    for bad in ("localhost", ":4317", "host:99999", "host:port"):
        with pytest.raises(ConfigError, match="endpoint: expected host:port"):
            parse_endpoint("endpoint", bad)


def test_positive_and_error_prefixing():
    assert parse_positive("n", 3, integer=True) == 3
    with pytest.raises(ConfigError) as info:
        parse_positive("queue_size", 2.5, integer=True)
    error = info.value.within("exporters.otlp.sending_queue")
    assert str(error) == "exporters.otlp.sending_queue.queue_size: expected a positive integer, got 2.5"
    assert str(ConfigError("a.b", "bad", source="x.yaml", line=7)) == "x.yaml:7: a.b: bad"


def test_unknown_keys_are_named_under_their_section():
    from carbonspan.collector.config_values import check_known_keys

    check_known_keys({"a": 1}, {"a", "b"})
    with pytest.raises(ConfigError) as top:
        check_known_keys({"recievers": {}}, {"receivers"})
    assert str(top.value) == "recievers: unknown key; expected one of receivers"
    with pytest.raises(ConfigError) as nested:
        check_known_keys({"htp": {}}, {"grpc", "http"}, "receivers.otlp.protocols")
    assert nested.value.key == "receivers.otlp.protocols.htp"
