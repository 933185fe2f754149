"""The Harmony decoder: routing, damaged shapes, and invariance under any chunking."""

import pytest
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from test_fuzz import HARMONY_PIECES

from harmony_filter.events import Content
from harmony_filter.events import Reasoning
from harmony_filter.events import ToolCallArgs
from harmony_filter.events import ToolCallBegin
from harmony_filter.events import ToolCallEnd
from harmony_filter.events import merge_text_events
from harmony_filter.harmony.decoder import SPECIAL_TOKEN
from harmony_filter.harmony.decoder import HarmonyDecoder
from harmony_filter.harmony.decoder import decode
from harmony_filter.harmony.decoder import parse_header


def call(name: str, args: str) -> list:
    return [ToolCallBegin(name), ToolCallArgs(args), ToolCallEnd()]


CASES = {
    "analysis then final": (
        "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final"
        "<|message|>Answer.<|return|>",
        [Reasoning("Think."), Content("Answer.")],
    ),
    "tool call, recipient in channel header": (
        "<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary"
        ' to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>',
        [Reasoning("Need weather."), *call("get_weather", '{"city":"Paris"}')],
    ),
    "recipient in role header, no constrain": (
        ' to=functions.get_weather<|channel|>commentary<|message|>{"city": "LA"}',
        call("get_weather", '{"city": "LA"}'),
    ),
    "recipient in role header after start": (
        "<|start|>assistant to=functions.f<|channel|>commentary json<|message|>{}<|call|>",
        call("f", "{}"),
    ),
    "constrain glued, no spaces": (
        "<|channel|>commentary to=functions.f<|constrain|>json<|message|>{}",
        call("f", "{}"),
    ),
    "constrain with a space": (
        "<|channel|>commentary to=functions.f <|constrain|> json<|message|>{}",
        call("f", "{}"),
    ),
    "tool call on the analysis channel": (
        "<|channel|>analysis to=functions.f <|constrain|>json<|message|>{}<|call|>",
        call("f", "{}"),
    ),
    "commentary preamble is content": (
        "<|channel|>commentary<|message|>Let me check.<|end|>"
        "<|start|>assistant<|channel|>commentary to=functions.f<|message|>{}<|call|>",
        [Content("Let me check."), *call("f", "{}")],
    ),
    "blank lines between messages": (
        "<|channel|>analysis<|message|>1+1 is 2<|end|>\n\n<|start|>assistant<|channel|>final"
        "<|message|>The answer is 2",
        [Reasoning("1+1 is 2"), Content("The answer is 2")],
    ),
    "llama.cpp reasoning-format none: final header dropped": (
        "<|channel|>analysis<|message|>I'm\nthinking<|end|>Hello, world!",
        [Reasoning("I'm\nthinking"), Content("Hello, world!")],
    ),
    "end without the next start": (
        "<|channel|>analysis<|message|>a<|end|><|channel|>final<|message|>b",
        [Reasoning("a"), Content("b")],
    ),
    "start without end (implicit close)": (
        "<|channel|>analysis<|message|>a<|start|>assistant<|channel|>final<|message|>b",
        [Reasoning("a"), Content("b")],
    ),
    "stray end and return before anything": (
        "<|end|><|return|><|channel|>final<|message|>b",
        [Content("b")],
    ),
    "unknown channel is content": (
        "<|channel|>analysis<|message|>a<|end|><|start|>assistant<|channel|>summary<|message|>s",
        [Reasoning("a"), Content("s")],
    ),
    "text after return is dropped": (
        "<|channel|>final<|message|>done<|return|>and more<|start|>assistant<|channel|>final"
        "<|message|>again",
        [Content("done")],
    ),
    "text after call is dropped, hallucinated tool result too": (
        "<|channel|>commentary to=functions.f<|message|>{}<|call|>junk"
        "<|start|>functions.f to=assistant<|channel|>commentary<|message|>result<|end|>",
        call("f", "{}"),
    ),
    "two calls in one turn": (
        "<|channel|>commentary to=functions.a<|message|>{}<|call|>"
        '<|start|>assistant<|channel|>commentary to=functions.b<|message|>{"x":1}<|call|>',
        [*call("a", "{}"), *call("b", '{"x":1}')],
    ),
    "doubled channel in header": (
        "<|channel|>commentary to=functions.query<|channel|>commentary <|constrain|>json"
        "<|message|>{}",
        call("query", "{}"),
    ),
    "bare recipient is a call": (
        '<|start|>assistant<|channel|>commentary to=read_file <|constrain|>json<|message|>{"a":1}',
        call("read_file", '{"a":1}'),
    ),
    "builtin call dropped by default": (
        '<|channel|>analysis to=browser.search<|message|>{"q":1}<|call|>',
        [],
    ),
    "cut off mid-analysis": (
        "<|channel|>analysis<|message|>I was think",
        [Reasoning("I was think")],
    ),
    "cut off mid-header": (
        "<|channel|>analysis<|message|>a<|end|><|start|>assistant<|channel|>fin",
        [Reasoning("a")],
    ),
    "clean text passes through, whitespace kept": (
        "  Hello <b>world</b> a < b",
        [Content("  Hello <b>world</b> a < b")],
    ),
    "text ending like the start of a token is text": (
        "<|channel|>final<|message|>x <|return",
        [Content("x <|return")],
    ),
    "clean text starting with t": ("the answer", [Content("the answer")]),
    "unknown special token dropped": (
        "<|channel|>final<|message|>a<|endoftext|>b",
        [Content("ab")],
    ),
    "header without message": (
        "<|channel|>analysis<|message|>a<|end|><|start|>assistant<|channel|>final<|end|>"
        "<|start|>assistant<|channel|>final<|message|>b",
        [Reasoning("a"), Content("b")],
    ),
}


@pytest.mark.parametrize("text, expected", CASES.values(), ids=CASES.keys())
def test_cases(text: str, expected: list) -> None:
    events, _ = decode(text)
    assert merge_text_events(events) == expected


def test_builtin_surfaced_on_request() -> None:
    events, _ = decode("<|channel|>analysis to=browser.search<|message|>{}<|call|>", "surface")
    assert events == call("browser.search", "{}")


WHOLE_TURNS = {
    "headerless, <|end|>, then a call: not the answer": (
        "……?? We loop.<|end|><|start|>assistant<|channel|>commentary to=functions.f"
        " <|constrain|>json<|message|>{}<|call|>",
        [Reasoning("……?? We loop."), *call("f", "{}")],
    ),
    "headerless, <|end|>, then a final message": (
        "Thinking aloud.<|end|><|start|>assistant<|channel|>final<|message|>Hi.<|return|>",
        [Reasoning("Thinking aloud."), Content("Hi.")],
    ),
    "headerless, <|end|> and nothing after: the answer": ("Hi.<|end|>", [Content("Hi.")]),
    "headerless with <|return|>: the answer": ("Hi.<|return|>", [Content("Hi.")]),
    "no markup at all (a clean upstream): the answer": ("Hi there.", [Content("Hi there.")]),
    "headerless cut by a header: the answer, as in a stream": (
        "Hi.<|start|>assistant<|channel|>final<|message|>Yes.",
        [Content("Hi."), Content("Yes.")],
    ),
}


@pytest.mark.parametrize("text, expected", WHOLE_TURNS.values(), ids=WHOLE_TURNS.keys())
def test_a_whole_turn_judges_headerless_text_by_how_it_ends(text: str, expected: list) -> None:
    decoder = HarmonyDecoder(whole=True)
    events = decoder.feed(text) + decoder.close()
    assert merge_text_events(events) == merge_text_events(expected)
    judged = any(isinstance(event, Reasoning) for event in expected)
    assert ("headerless-message-as-reasoning" in decoder.recoveries) == judged
    streamed, _ = decode(text)  # a stream cannot wait: the same text, as content
    as_content = [Content(e.text) if isinstance(e, Reasoning) else e for e in expected]
    assert merge_text_events(streamed) == merge_text_events(as_content)


def test_recoveries_are_named() -> None:
    _, decoder = decode("<|channel|>analysis<|message|>a<|end|>b")
    assert decoder.recoveries == ["final-header-missing"]


@pytest.mark.parametrize(
    "header, expected",
    [
        ("assistant<|channel|>final", ("assistant", "final", None)),
        (" to=functions.x<|channel|>commentary", ("assistant", "commentary", "functions.x")),
        (
            "assistant<|channel|>commentary to=functions.x<|constrain|>json",
            ("assistant", "commentary", "functions.x"),
        ),
        (
            "functions.x to=assistant<|channel|>commentary",
            ("functions.x", "commentary", "assistant"),
        ),
        ("<|channel|>commentary?", ("assistant", "commentary", None)),
    ],
)
def test_parse_header(header: str, expected: tuple) -> None:
    assert parse_header(header) == expected


def feed_in_pieces(text: str, cuts: list[int], whole: bool = False) -> list:
    decoder = HarmonyDecoder(whole=whole)
    events, start = [], 0
    for cut in sorted(set(cuts)):
        events += decoder.feed(text[start:cut])
        start = cut
    events += decoder.feed(text[start:])
    events += decoder.close()
    return merge_text_events(events)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_chunking_gives_the_same_events(data: st.DataObject) -> None:
    for text, expected in CASES.values():
        cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=len(text) // 2 + 1))
        assert feed_in_pieces(text, cuts) == expected


HARMONYISH = st.lists(st.one_of(HARMONY_PIECES, st.text(max_size=5)), max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(HARMONYISH, st.lists(st.integers(0, 200), max_size=20))
@example("<|message|>", [11])  # an empty piece in a message body is no event
def test_never_raises_never_leaks_and_is_chunking_invariant(text: str, cuts: list[int]) -> None:
    whole, _ = decode(text)
    pieces = feed_in_pieces(text, [c for c in cuts if c <= len(text)])
    assert pieces == merge_text_events(whole)
    # A whole turn: also chunking invariant, and the same events but for headerless text it
    # judged to be reasoning.
    judged = feed_in_pieces(text, [c for c in cuts if c <= len(text)], whole=True)
    assert judged == feed_in_pieces(text, [], whole=True)
    assert as_text(judged) == as_text(pieces)
    for event in whole:
        if isinstance(event, (Reasoning, Content, ToolCallArgs)):
            assert not SPECIAL_TOKEN.search(event.text)
        if isinstance(event, ToolCallBegin):
            assert "<|" not in event.name


def as_text(events: list) -> list:
    """Reasoning and content alike, as one text."""
    return merge_text_events([Content(e.text) if isinstance(e, Reasoning) else e for e in events])
