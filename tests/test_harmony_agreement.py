"""Agreement with openai-harmony, the reference implementation of the Harmony format.

openai-harmony renders assistant messages into tokens and parses tokens back into messages. Our
decoder sees only the text those tokens spell, cut into pieces anywhere. For every completion the
model can write, both must find the same messages: analysis -> Reasoning, final and recipient-less
commentary -> Content, a `functions.NAME` recipient -> ToolCallBegin(NAME), its JSON arguments,
ToolCallEnd.
"""

import json
import random
import re
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from openai_harmony import HarmonyEncodingName
from openai_harmony import Message
from openai_harmony import Role
from openai_harmony import StreamableParser
from openai_harmony import load_harmony_encoding

from harmony_filter.events import Content
from harmony_filter.events import Event
from harmony_filter.events import Reasoning
from harmony_filter.events import ToolCallArgs
from harmony_filter.events import ToolCallBegin
from harmony_filter.events import ToolCallEnd
from harmony_filter.events import merge_text_events
from harmony_filter.harmony.decoder import SPECIAL_TOKEN
from harmony_filter.harmony.decoder import HarmonyDecoder

ENC = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
ASSISTANT_PREFIX = ENC.encode("<|start|>assistant", allowed_special="all")
"""What the prompt ends with: a completion starts right after it."""
ENDINGS = {
    "return": ENC.encode("<|return|>", allowed_special="all"),
    "end": ENC.encode("<|end|>", allowed_special="all"),
    "eos": [],  # the server stopped on <|return|> and did not pass it on
}
DATA = Path(__file__).parent / "data" / "harmony"


@dataclass(frozen=True)
class Spec:
    """One assistant message of a completion."""

    channel: str
    text: str
    tool: str | None = None
    """A function name: the message calls functions.TOOL with `text` as its JSON arguments."""
    recipient_in_channel: bool = False
    """Write `<|channel|>commentary to=functions.X` (gpt-oss's usual form) instead of the
    `assistant to=functions.X<|channel|>…` role header that openai-harmony renders."""


def message_tokens(spec: Spec) -> list[int]:
    message = Message.from_role_and_content(Role.ASSISTANT, spec.text).with_channel(spec.channel)
    if spec.tool is None:
        return ENC.render(message)
    recipient = f"functions.{spec.tool}"
    message = message.with_recipient(recipient).with_content_type("<|constrain|>json")
    tokens = ENC.render(message)
    if not spec.recipient_in_channel:
        return tokens
    rendered = ENC.decode_utf8(tokens)
    role_form = f"assistant to={recipient}<|channel|>{spec.channel}"
    assert role_form in rendered
    moved = rendered.replace(role_form, f"assistant<|channel|>{spec.channel} to={recipient}", 1)
    return ENC.encode(moved, allowed_special="all")


def completion_tokens(specs: list[Spec], ending: str) -> list[int]:
    """The tokens a model writes for `specs` after the prompt's `<|start|>assistant`.

    Rendered messages end with <|call|> (calls) or <|end|>; a text message that ends the turn
    ends with `ending` instead.
    """
    tokens = [token for spec in specs for token in message_tokens(spec)]
    assert tokens[: len(ASSISTANT_PREFIX)] == ASSISTANT_PREFIX
    tokens = tokens[len(ASSISTANT_PREFIX) :]
    if specs[-1].tool is None:
        tokens = tokens[:-1] + ENDINGS[ending]
    return tokens


def harmony_messages(tokens: list[int], role: Role | None = Role.ASSISTANT) -> list[Message]:
    parser = StreamableParser(ENC, role=role)
    for token in tokens:
        parser.process(token)
    parser.process_eos()
    return parser.messages


def message_text(message: Message) -> str:
    return "".join(part.text for part in message.content)


def reference_events(messages: list[Message]) -> list[Event]:
    """The events openai-harmony's messages stand for."""
    events: list[Event] = []
    for message in messages:
        text = message_text(message)
        recipient = message.recipient or ""
        if recipient.startswith("functions."):
            events.append(ToolCallBegin(recipient.removeprefix("functions.")))
            if text:
                events.append(ToolCallArgs(text))
            events.append(ToolCallEnd())
        elif text:
            events.append(Reasoning(text) if message.channel == "analysis" else Content(text))
    return merge_text_events(events)


def decode_in_pieces(
    text: str, cuts: set[int], builtin_tools: str = "drop"
) -> tuple[list[Event], HarmonyDecoder]:
    decoder = HarmonyDecoder(builtin_tools)
    events: list[Event] = []
    for start, end in pairwise(sorted({0, len(text)} | cuts)):
        events += decoder.feed(text[start:end])
    events += decoder.close()
    return merge_text_events(events), decoder


def inside_special_tokens(text: str) -> list[int]:
    """Every cut position that splits a special token."""
    return [m.start() + k for m in SPECIAL_TOKEN.finditer(text) for k in range(1, len(m[0]))]


def seeded_chunkings(text: str, seed: str) -> list[set[int]]:
    """No cut, a cut between every two characters, and 20 reproducible random cuttings."""
    rng = random.Random(seed)
    random_cuts = [
        {rng.randrange(len(text)) for _ in range(rng.randrange(1, 40))} for _ in range(20)
    ]
    return [set(), set(range(len(text))), *random_cuts]


def check_agreement(specs: list[Spec], ending: str, chunkings: list[set[int]]) -> None:
    tokens = completion_tokens(specs, ending)
    messages = harmony_messages(tokens)
    # The input is valid Harmony: openai-harmony reads back exactly the messages we rendered.
    assert [(m.channel, m.recipient, message_text(m)) for m in messages] == [
        (s.channel, s.tool and f"functions.{s.tool}", s.text) for s in specs
    ]
    expected = reference_events(messages)
    text = ENC.decode_utf8(tokens)
    for cuts in chunkings:
        events, decoder = decode_in_pieces(text, cuts)
        assert events == expected, f"text={text!r} cuts={sorted(cuts)}"
        assert decoder.recoveries == [], f"text={text!r} cuts={sorted(cuts)}"
        assert decoder.tool_calls == sum(spec.tool is not None for spec in specs)


# -- generated completions --------------------------------------------------------------------


TOKEN_LIKE = re.compile(r"<\|\w+\|>")
"""Covers every special token of the encoding (checked below) and everything we decode as one."""
assert all(TOKEN_LIKE.fullmatch(token) for token in ENC.special_tokens_set)


def free_of_special_tokens(text: str) -> bool:
    return not TOKEN_LIKE.search(text)


TRICKY = ["<", "|", ">", "<|", "|>", "<|end", "<|message", "|call", "to=", " ", "\n", "{", '"']


def texts(max_size: int) -> st.SearchStrategy[str]:
    """Any text without a special token in it, rich in pieces of one."""
    pieces = st.one_of(st.sampled_from(TRICKY), st.characters(codec="utf-8"))
    return st.lists(pieces, max_size=max_size).map("".join).filter(free_of_special_tokens)


tool_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_\-]{0,30}", fullmatch=True)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts(12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts(6), inner, max_size=4),
    max_leaves=12,
)
arguments = (
    st.dictionaries(texts(6), json_values, max_size=4)
    .map(lambda value: json.dumps(value, ensure_ascii=False))
    .filter(free_of_special_tokens)
)
text_messages = st.builds(Spec, st.sampled_from(["analysis", "commentary", "final"]), texts(40))
calls = st.builds(
    Spec,
    st.sampled_from(["commentary", "analysis"]),
    arguments,
    tool=tool_names,
    recipient_in_channel=st.booleans(),
)
# Calls come last: a turn ends with its calls, and the decoder drops text after <|call|>.
completions = st.tuples(st.lists(text_messages, max_size=4), st.lists(calls, max_size=3)).map(
    lambda parts: parts[0] + parts[1]
)


@settings(max_examples=200)
@given(completions.filter(bool), st.sampled_from(sorted(ENDINGS)), st.data())
def test_agrees_with_openai_harmony_however_the_text_is_cut(
    specs: list[Spec], ending: str, data: st.DataObject
) -> None:
    text = ENC.decode_utf8(completion_tokens(specs, ending))
    every_char = set(range(len(text)))
    random_cuts = data.draw(st.sets(st.integers(0, len(text))), label="random cuts")
    token_cuts = data.draw(
        st.sets(st.sampled_from(inside_special_tokens(text) or [0])), label="cuts in tokens"
    )
    check_agreement(specs, ending, [set(), every_char, random_cuts, token_cuts | random_cuts])


# -- chosen completions -----------------------------------------------------------------------

LONG_ARGUMENTS = json.dumps(
    {
        "query": "weather <|near| > Zürich | 東京 | 🌧️ " * 20,
        "rows": [{"id": i, "tags": ["<", "|>", "a|b"], "ok": i % 2 == 0} for i in range(80)],
    },
    ensure_ascii=False,
)
CHOSEN = {
    "reasoning then answer": (
        [Spec("analysis", "User asks 2+2. Simple."), Spec("final", "2 + 2 = 4.")],
        "return",
    ),
    "unicode and near-tokens": (
        [
            Spec("analysis", "Größe <| and |> and <|end and a|b — 😀 \n\n"),
            Spec("commentary", "Let me check <message> first."),
            Spec("final", "Résumé: 東京 is <|fine|"),
        ],
        "eos",
    ),
    "preamble then call": (
        [
            Spec("analysis", "Need weather."),
            Spec("commentary", "Checking the weather."),
            Spec("commentary", '{"location": "Tokyo"}', tool="get_weather"),
        ],
        "call",
    ),
    "call written in the channel header": (
        [Spec("commentary", '{"q": "x"}', tool="search", recipient_in_channel=True)],
        "call",
    ),
    "long arguments on the analysis channel": (
        [
            Spec("analysis", "Big query."),
            Spec("analysis", LONG_ARGUMENTS, tool="big_query", recipient_in_channel=True),
        ],
        "call",
    ),
    "parallel calls": (
        [
            Spec("commentary", '{"city": "Paris"}', tool="weather"),
            Spec("commentary", '{"city": "Oslo"}', tool="weather", recipient_in_channel=True),
            Spec("commentary", "{}", tool="clock-now"),
        ],
        "call",
    ),
    "answer ended by <|end|>": ([Spec("final", "ok")], "end"),
}


@pytest.mark.parametrize("name", sorted(CHOSEN))
def test_chosen_completions_agree(name: str) -> None:
    specs, ending = CHOSEN[name]
    text = ENC.decode_utf8(completion_tokens(specs, ending))
    chunkings = [set(inside_special_tokens(text)), *seeded_chunkings(text, name)]
    check_agreement(specs, ending, chunkings)


@pytest.mark.parametrize("last_text", ["is <|fine|", "a <|", "x <|return"])
def test_text_ending_like_a_token_start_is_kept(last_text: str) -> None:
    """At the end of the stream a held `<|word` can no longer become a special token: it is text."""
    check_agreement([Spec("analysis", "hm"), Spec("final", last_text)], "eos", [set()])


# -- openai/harmony's own test vectors (tests/data/harmony, see NOTICE there) -----------------


def vector_tokens(name: str) -> list[int]:
    raw = (DATA / name).read_text(encoding="utf-8")
    if name in ("test_streamable_parser.txt", "test_tool_response_parsing.txt"):
        return ENC.encode(raw, allowed_special="all")
    return [int(token) for token in raw.split()]


SIMPLE_ANALYSIS = 'User asks: "What is 2 + 2?" Simple arithmetic. Provide answer.'
TOOL_ANALYSIS = 'User asks: "What is the weather in Tokyo?" We need to use lookup_weather tool.'
BROWSER_ANALYSIS = (
    'User asks "Who is the current US president?" It\'s 2025, presumably current president is '
    "Joe Biden? Actually as of 2025-07-28, there was a 2024 election. In 2024, President is "
    "probably President Biden still? But w\ne need up to date info. Let's browse to confirm."
)
BROWSER_ARGS = '{"query": "current US president July 2025", "topn": 10, "source": "news"}'


@pytest.mark.parametrize(
    ("name", "role", "builtin_tools", "harmony_reads", "we_read", "recoveries"),
    [
        pytest.param(
            "test_simple_reasoning_response.txt",
            Role.ASSISTANT,
            "drop",
            [("analysis", None, SIMPLE_ANALYSIS), ("final", None, "2 + 2 = 4.")],
            # <|return|> ends the turn for us; openai-harmony reads on into the next message.
            [Reasoning(SIMPLE_ANALYSIS)],
            ["text-after-end-dropped"],
            id="reasoning-response",
        ),
        pytest.param(
            "test_simple_tool_call.txt",
            Role.ASSISTANT,
            "drop",
            [
                ("analysis", None, TOOL_ANALYSIS),
                ("analysis", "lookup_weather", '{"location": "Tokyo"}'),
            ],
            [Reasoning(TOOL_ANALYSIS)],  # as above: the call comes after <|return|>
            ["text-after-end-dropped"],
            id="tool-call-after-return",
        ),
        pytest.param(
            "test_streamable_parser.txt",
            Role.ASSISTANT,
            "drop",
            [
                ("analysis", None, BROWSER_ANALYSIS),
                ("commentary", "browser.search", BROWSER_ARGS),
                ("commentary", "assistant", '{"result": "https://openai.com/"}'),
            ],
            # A built-in tool call is the server's business (dropped by default); the third
            # message is the tool's (hallucinated) answer, not the assistant's.
            [Reasoning(BROWSER_ANALYSIS)],
            ["builtin-call-dropped", "non-assistant-message-dropped"],
            id="browser-call-drop",
        ),
        pytest.param(
            "test_streamable_parser.txt",
            Role.ASSISTANT,
            "surface",
            [
                ("analysis", None, BROWSER_ANALYSIS),
                ("commentary", "browser.search", BROWSER_ARGS),
                ("commentary", "assistant", '{"result": "https://openai.com/"}'),
            ],
            [
                Reasoning(BROWSER_ANALYSIS),
                ToolCallBegin("browser.search"),
                ToolCallArgs(BROWSER_ARGS),
                ToolCallEnd(),
            ],
            ["non-assistant-message-dropped"],
            id="browser-call-surface",
        ),
        pytest.param(
            "test_tool_response_parsing.txt",
            None,
            "drop",
            [("commentary", "assistant", '{"result": "https://openai.com/"} ')],
            [],  # a tool's message is never assistant output
            ["non-assistant-message-dropped"],
            id="tool-response",
        ),
    ],
)
def test_openai_harmony_vectors(
    name: str,
    role: Role | None,
    builtin_tools: str,
    harmony_reads: list[tuple[str, str | None, str]],
    we_read: list[Event],
    recoveries: list[str],
) -> None:
    tokens = vector_tokens(name)
    messages = harmony_messages(tokens, role)
    assert [(m.channel, m.recipient, message_text(m)) for m in messages] == harmony_reads
    text = ENC.decode_utf8(tokens)
    for cuts in seeded_chunkings(text, name):
        events, decoder = decode_in_pieces(text, cuts, builtin_tools)
        assert events == we_read, sorted(cuts)
        assert decoder.recoveries == recoveries, sorted(cuts)
