"""Dialect translation: marker-stripped Harmony and Bedrock reasoning tags, read by the decoder."""

import json

import pytest
from hypothesis import assume
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from harmony_filter.events import Content
from harmony_filter.events import Event
from harmony_filter.events import Reasoning
from harmony_filter.events import ToolCallArgs
from harmony_filter.events import ToolCallBegin
from harmony_filter.events import ToolCallEnd
from harmony_filter.events import merge_text_events
from harmony_filter.harmony.decoder import HarmonyDecoder
from harmony_filter.harmony.dialects import HOLD_LIMIT
from harmony_filter.harmony.dialects import REASONING_TAGS
from harmony_filter.harmony.dialects import STRIPPED_MARKERS
from harmony_filter.harmony.dialects import DialectTranslator


def call(name: str, args: str) -> list[Event]:
    return [ToolCallBegin(name), ToolCallArgs(args), ToolCallEnd()]


def cut(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(text)}), len(text)]
    return [text[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]


def translate(pieces: list[str]) -> tuple[str, DialectTranslator]:
    translator = DialectTranslator()
    text = "".join(translator.feed(piece) for piece in pieces)
    return text + translator.close(), translator


def decode_pieces(pieces: list[str]) -> tuple[list[Event], DialectTranslator, HarmonyDecoder]:
    """What the choice decoder does with content deltas: translate, then decode."""
    translator, decoder = DialectTranslator(), HarmonyDecoder()
    events: list[Event] = []
    for text in [*(translator.feed(piece) for piece in pieces), translator.close()]:
        if text:
            events += decoder.feed(text)
    events += decoder.close()
    return merge_text_events(events), translator, decoder


# Bedrock runtime, streaming, every delta wrapped on its own (llama-stack recording of
# openai.gpt-oss-20b-1:0: corpus case bedrock-runtime-stream-final-after-tool-unicode).
BEDROCK_DELTAS = [
    "",
    '<reasoning>User asked: "What is the boiling point of myawesomeliquid?" We used function'
    " get_boiling_point and</reasoning>",
    "<reasoning> got -100. The response should be a friendly</reasoning>",
    "<reasoning> answer. Probably not more function calls needed. Provide</reasoning>",
    "<reasoning> answer: -100°C? The</reasoning>",
    '<reasoning> function default celsius true. So answer "The boiling point of myaw</reasoning>',
    '<reasoning>esomeliquid is -100°C."</reasoning>',
    "The boiling point of **myawesomeliquid** is **−100\u202f°C**.",
]
BEDROCK_EXPECTED: list[Event] = [
    Reasoning(
        'User asked: "What is the boiling point of myawesomeliquid?" We used function'
        " get_boiling_point and got -100. The response should be a friendly answer. Probably not"
        " more function calls needed. Provide answer: -100°C? The function default celsius true."
        ' So answer "The boiling point of myawesomeliquid is -100°C."'
    ),
    Content("The boiling point of **myawesomeliquid** is **−100\u202f°C**."),
]

CASES: dict[str, tuple[str, list[Event]]] = {
    # sgl-project/sglang#9244 (fragment: the answer was cut off in the report)
    "sglang stripped, cut off in analysis": (
        'analysisThe user asks: "What is',
        [Reasoning('The user asks: "What is')],
    ),
    # thinking-machines-lab/tinker-cookbook#239 (fragment)
    "tinker stripped, cut off in analysis": (
        "analysisNeed to answer in 20 words exactly. Summarize reason: Rayleigh scattering etc."
        " Count words. Provide 20 w",
        [
            Reasoning(
                "Need to answer in 20 words exactly. Summarize reason: Rayleigh scattering etc."
                " Count words. Provide 20 w"
            )
        ],
    ),
    # Augustas11/macprovider#743
    "stripped analysis then final": (
        'analysisWe need to … The answer is "four".assistantfinalfour',
        [Reasoning('We need to … The answer is "four".'), Content("four")],
    ),
    "stripped final keeps its whitespace": (
        "analysis**Plan**\n\nAdd.assistantfinal\n  4\n",
        [Reasoning("**Plan**\n\nAdd."), Content("\n  4\n")],
    ),
    "stripped tool call": (
        'analysisNeed weather.assistantcommentary to=functions.get_weather json{"city":"Paris"}',
        [Reasoning("Need weather."), *call("get_weather", '{"city":"Paris"}')],
    ),
    "stripped tool call, constrain token kept": (
        "analysisNeed weather.assistantcommentary to=functions.get_weather <|constrain|>json"
        '{"city":"Paris"}',
        [Reasoning("Need weather."), *call("get_weather", '{"city":"Paris"}')],
    ),
    "marker words inside arguments stay": (
        'analysisSave it.assistantcommentary to=functions.save json{"text":"assistantfinal'
        ' analysisX assistantcommentary to=functions.y json{}"}',
        [
            Reasoning("Save it."),
            *call(
                "save",
                '{"text":"assistantfinal analysisX assistantcommentary to=functions.y json{}"}',
            ),
        ],
    ),
    "stripped preamble then call": (
        "analysisCheck first.assistantcommentaryLet me check.assistantcommentary to=functions.f"
        " json{}",
        [Reasoning("Check first."), Content("Let me check."), *call("f", "{}")],
    ),
    "second analysis after a preamble": (
        "analysisA.assistantcommentaryOne moment.assistantanalysisB.assistantfinalC",
        [Reasoning("A."), Content("One moment."), Reasoning("B."), Content("C")],
    ),
    # waybarrios/vllm-mlx#562: a call on the analysis channel with content type `code`
    "stripped call on the analysis channel, code": (
        "analysisWe need to run ffgrep. Let us search.\nassistantanalysis to=functions.ffgrep"
        ' code\n{"path":"","pattern":"TextualDisplayView"}',
        [
            Reasoning("We need to run ffgrep. Let us search.\n"),
            *call("ffgrep", '{"path":"","pattern":"TextualDisplayView"}'),
        ],
    ),
    "name glued to the content type is left for name repair": (
        'analysisGo.assistantcommentary to=functions.shelljson["ls"]',
        [Reasoning("Go."), *call("shelljson", '["ls"]')],
    ),
    "turn opens with a stripped call": (
        'commentary to=functions.get_weather json{"city":"Paris"}',
        call("get_weather", '{"city":"Paris"}'),
    ),
    "turn opens with assistantfinal": ("assistantfinalHi!", [Content("Hi!")]),
    # vllm-mlx#562: its cleanup left `assistantcode{…}` with the name gone; the JSON stays content
    "vllm-mlx assistantcode leftover": (
        'assistantcode{"path":""}',
        [Content('{"path":""}')],
    ),
    "call header cut off before its arguments": (
        "analysisNeed weather.assistantcommentary to=functions.get_weather js",
        [Reasoning("Need weather.")],
    ),
    "final answer ends on a partial marker word": (
        "analysisX.assistantfinalSee assist",
        [Reasoning("X."), Content("See assist")],
    ),
    "a header that never reaches its arguments is text": (
        "analysisA" + "assistantcommentary to=" + "x" * HOLD_LIMIT + "assistantfinalB",
        [Reasoning("A" + "assistantcommentary to=" + "x" * HOLD_LIMIT), Content("B")],
    ),
    "a header with words before the arguments is text": (
        "analysisA assistantcommentary to=functions.f and then {} assistantfinalB",
        [Reasoning("A assistantcommentary to=functions.f and then {} "), Content("B")],
    ),
    "bedrock, one delta per wrapped piece": ("".join(BEDROCK_DELTAS), BEDROCK_EXPECTED),
    "bedrock seam splits a word, answer keeps its whitespace": (
        "<reasoning>The</reasoning><reasoning> user asks</reasoning>\n\nAnswer",
        [Reasoning("The user asks"), Content("\n\nAnswer")],
    ),
    "bedrock whitespace between pieces is layout": (
        "  <reasoning>a</reasoning>\n<reasoning>b</reasoning>\n",
        [Reasoning("ab")],
    ),
    "bedrock stray and nested tags are dropped": (
        "<reasoning>a<reasoning>b</reasoning></reasoning>c</reasoning>d",
        [Reasoning("ab"), Content("cd")],
    ),
    "bedrock reasoning after an answer": (
        "<reasoning>a</reasoning>b<reasoning>c</reasoning>d",
        [Reasoning("a"), Content("b"), Reasoning("c"), Content("d")],
    ),
    "bedrock answer ends on a partial tag": (
        "<reasoning>a</reasoning>x <reas",
        [Reasoning("a"), Content("x <reas")],
    ),
}


@pytest.mark.parametrize("text, expected", CASES.values(), ids=CASES.keys())
def test_cases(text: str, expected: list[Event]) -> None:
    events, _, decoder = decode_pieces([text])
    assert events == expected
    assert "message-not-terminated" not in decoder.recoveries


def test_bedrock_stream_as_recorded() -> None:
    events, translator, decoder = decode_pieces(BEDROCK_DELTAS)
    assert events == BEDROCK_EXPECTED
    assert translator.dialect == REASONING_TAGS
    assert decoder.recoveries == []


def test_stripped_dialect_is_named() -> None:
    _, translator, decoder = decode_pieces(["analysisHm.", "assistantfinal", "ok"])
    assert translator.dialect == STRIPPED_MARKERS
    assert decoder.recoveries == []


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_any_chunking_gives_the_same_events(data: st.DataObject) -> None:
    for text, expected in CASES.values():
        cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=len(text) // 2 + 1))
        assert decode_pieces(cut(text, cuts))[0] == expected


PLAIN = [
    "analysis of the data shows a trend",
    "analysis shows that 2+2=4",
    "analysisx is not a word",
    "  \n analysis to the end",
    "Analysis: done",
    "assistant final answer",
    "The answer mentions assistantfinal and <reasoning> later",
    "commentary: none",
    "<reason>why</reason>",
    "<reasoningx>",
    "<|channel|>analysis<|message|>a<|end|>assistantfinalb",
    "<|channel|>final<|message|><reasoning>x</reasoning>",
    "analysis",
    "assistantfin",
    " " * HOLD_LIMIT + "analysisThe",
    "",
]


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_plain_text_passes_untouched(data: st.DataObject) -> None:
    for text in PLAIN:
        cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=8))
        translated, translator = translate(cut(text, cuts))
        assert translated == text
        assert translator.dialect is None


def test_plain_text_is_handed_on_as_is_once_known() -> None:
    translator = DialectTranslator()
    assert translator.feed("Hello") == "Hello"
    piece = " world, analysisThe assistantfinal"
    assert translator.feed(piece) is piece


@pytest.mark.parametrize(
    "text",
    [
        " " * (HOLD_LIMIT + 10),
        "<reasoning>a</reasoning>" + " " * (HOLD_LIMIT + 10),
        "analysisA assistantcommentary to=" + "x" * (HOLD_LIMIT + 10),
    ],
    ids=["leading whitespace", "whitespace after a reasoning piece", "call header"],
)
def test_hold_back_is_bounded(text: str) -> None:
    translator = DialectTranslator()
    streamed = "".join(translator.feed(char) for char in text)
    assert streamed.endswith(text[-10:])  # handed on before the end of the turn


PIECES = st.sampled_from(
    [
        "analysis",
        "assistant",
        "assistantfinal",
        "assistantcommentary",
        "assistantanalysis",
        "assistantcode",
        "commentary",
        "final",
        " to=",
        "to=",
        "functions.f",
        " json",
        "code",
        "<|constrain|>",
        "<|end|>",
        "<|message|>",
        "{",
        "[",
        "}",
        '"',
        "<reasoning>",
        "</reasoning>",
        "<reas",
        "</",
        "<",
        "The",
        " ",
        "\n",
        "é😀",
    ]
)
DIALECTISH = st.lists(st.one_of(PIECES, st.text(max_size=4)), max_size=25).map("".join)


@settings(max_examples=400, deadline=None)
@given(DIALECTISH, st.lists(st.integers(0, 300), max_size=25))
def test_translation_is_chunking_invariant_and_bounded(text: str, cuts: list[int]) -> None:
    whole, _ = translate([text])
    assert translate(cut(text, cuts))[0] == whole
    translator = DialectTranslator()
    for piece in cut(text, cuts):
        translator.feed(piece)
    assert len(translator.close()) <= HOLD_LIMIT + 64  # nothing more was ever held


@settings(max_examples=200, deadline=None)
@given(st.text(), st.lists(st.integers(0, 100), max_size=10))
def test_arbitrary_text_never_raises(text: str, cuts: list[int]) -> None:
    for prefix in ("", "analysisX", "<reasoning>", "assistantcommentary to=functions.f "):
        text = prefix + text
        assert decode_pieces(cut(text, cuts))[0] == decode_pieces([text])[0]


MARKER_WORDS = ("assistantfinal", "assistantanalysis", "assistantcommentary", "assistantcode")
WORDS = st.lists(
    st.one_of(
        st.sampled_from(["assistant", "assist", "analysis", "final", "a", " ", "\n", "{", "<"]),
        st.text(st.characters(exclude_characters="|"), max_size=6),
    ),
    max_size=12,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(WORDS, WORDS, st.lists(st.integers(0, 200), max_size=20))
def test_stripped_reasoning_and_answer(thought: str, answer: str, cuts: list[int]) -> None:
    thought = "We " + thought
    assume(not any(word in thought + answer for word in MARKER_WORDS))
    assume(not answer.startswith(" to=") and "<reasoning>" not in thought)
    expected = [Reasoning(thought), *([Content(answer)] if answer else [])]
    events, _, _ = decode_pieces(cut(f"analysis{thought}assistantfinal{answer}", cuts))
    assert events == expected


@settings(max_examples=100, deadline=None)
@given(
    WORDS,
    st.dictionaries(st.text(max_size=5), st.one_of(WORDS, st.integers()), max_size=3),
    st.lists(st.integers(0, 200), max_size=20),
)
def test_stripped_tool_call(thought: str, arguments: dict, cuts: list[int]) -> None:
    thought = "Need " + thought
    assume(not any(word in thought for word in MARKER_WORDS))
    args = json.dumps(arguments, ensure_ascii=False)
    text = f"analysis{thought}assistantcommentary to=functions.do_it json{args}"
    events, _, _ = decode_pieces(cut(text, cuts))
    assert events == [Reasoning(thought), *call("do_it", args)]


@settings(max_examples=150, deadline=None)
@given(st.lists(WORDS, min_size=1, max_size=6), WORDS, st.lists(st.integers(0, 300), max_size=20))
def test_bedrock_reasoning_and_answer(thoughts: list[str], answer: str, cuts: list[int]) -> None:
    assume(not any(tag in "".join(thoughts) + answer for tag in ("<reasoning>", "</reasoning>")))
    deltas = [f"<reasoning>{thought}</reasoning>" for thought in thoughts] + [answer]
    reasoning = "".join(thoughts)
    expected = [
        *([Reasoning(reasoning)] if reasoning else []),
        *([Content(answer)] if answer.strip() else []),
    ]
    assert decode_pieces(deltas)[0] == expected
    assert decode_pieces(cut("".join(deltas), cuts))[0] == expected
