"""The events a response is decoded into, and re-encoded from.

Every decoder (Harmony text, structured upstream fields) produces these; every encoder
(chat.completion, chat.completion.chunk) consumes them. Keeping one small vocabulary is what
lets the streaming and the non-streaming paths give the same answer.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reasoning:
    """Analysis text (the model's chain of thought)."""

    text: str


@dataclass(frozen=True, slots=True)
class Content:
    """Text meant for the user: the final answer or a commentary preamble."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallBegin:
    """A function call starts. `call_id` is the upstream's id, or None when it gave none."""

    name: str
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCallArgs:
    """A piece of the current call's JSON arguments."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallEnd:
    """The current call is complete."""


Event = Reasoning | Content | ToolCallBegin | ToolCallArgs | ToolCallEnd


def merge_text_events(events: list[Event]) -> list[Event]:
    """Join neighbouring text events of the same kind, so that two decodings compare equal
    however their input was cut."""
    merged: list[Event] = []
    for event in events:
        last = merged[-1] if merged else None
        if isinstance(event, (Reasoning, Content, ToolCallArgs)) and type(last) is type(event):
            merged[-1] = type(event)(last.text + event.text)  # type: ignore[union-attr,call-arg]
        else:
            merged.append(event)
    return merged
