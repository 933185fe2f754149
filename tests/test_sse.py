"""SSE framing: events survive any cut, CRLF, missing spaces and extra fields."""

from hypothesis import given
from hypothesis import strategies as st

from harmony_filter.api.sse import SseDecoder
from harmony_filter.api.sse import encode_event

BODY = (
    b": ping\n\n"
    b'event: message\nid: 7\ndata: {"a":1}\n\n'
    b'data:{"b":2}\r\n\r\n'
    b"data: line1\ndata: line2\n\n"
    b"\n\n"
    b"data: [DONE]\r\r"
)
EXPECTED = [
    (None, [b": ping"]),
    ('{"a":1}', [b"event: message", b"id: 7"]),
    ('{"b":2}', []),
    ("line1\nline2", []),
    ("[DONE]", []),
]


def decode_in_pieces(body: bytes, cuts: list[int]) -> list:
    decoder, events, start = SseDecoder(), [], 0
    for cut in sorted(set(cuts)) + [len(body)]:
        events += decoder.feed(body[start:cut])
        start = cut
    return events + decoder.flush()


@given(st.lists(st.integers(0, len(BODY)), max_size=40))
def test_any_cut_gives_the_same_events(cuts: list[int]) -> None:
    events = decode_in_pieces(BODY, cuts)
    assert [(e.data, e.fields) for e in events] == EXPECTED


def test_last_event_without_blank_line_is_flushed() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: 1\n\ndata: 2") and decoder.flush()[0].data == "2"


def test_bytes_that_are_not_utf8_are_replaced() -> None:
    (event,) = SseDecoder().feed(b"id: \xff\ndata: caf\xe9\n\n")
    assert event.replaced and event.data == "caf\ufffd" and event.fields == ["id: \ufffd".encode()]
    assert event.raw == "id: \ufffd\ndata: caf\ufffd\n\n".encode()


def test_encode_keeps_fields() -> None:
    assert encode_event("x", [b"id: 1"]) == b"id: 1\ndata: x\n\n"
