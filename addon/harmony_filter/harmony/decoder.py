"""Incremental Harmony decoder: text deltas in, events out.

gpt-oss writes
`<|channel|>analysis<|message|>…<|end|><|start|>assistant<|channel|>final<|message|>…`.
Servers hand that text to us in pieces cut anywhere, special tokens included, and in many damaged
shapes. This decoder is a small state machine over the text that:

- gives the same events however the text is cut (it holds back only a possible special-token
  prefix, plus at most `to=` and whitespace between messages);
- never raises and never lets a special token into an event;
- routes analysis to reasoning, final and recipient-less commentary to content, and a message
  with a `functions.NAME` recipient (in the role or the channel header, on any channel) to a tool
  call whose arguments stream as they arrive.
"""

import re

from ..events import Content
from ..events import Event
from ..events import Reasoning
from ..events import ToolCallArgs
from ..events import ToolCallBegin
from ..events import ToolCallEnd

SPECIAL_TOKEN = re.compile(r"<\|([a-z_]{1,24})\|>")
_SPECIAL_PREFIX = re.compile(r"<(?:\|[a-z_]{0,24}\|?)?")
_RECIPIENT = re.compile(r"\bto=([^\s<]+)")
_CHANNEL = re.compile(r"<\|channel\|>\s*([A-Za-z_]+)")
_ROLE = re.compile(r"\s*([^\s<]*)")
_HEADER_LIMIT = 1024
"""A header longer than this is no header: we stop buffering it (bounded memory)."""

BUILTIN_PREFIXES = ("browser.", "python", "container.")
BUILTIN_TOOL_MODES = ("drop", "surface")

# States
_BETWEEN = 0  # before a message: expecting a header, or headerless text
_HEADER = 1  # inside a header, until <|message|>
_BODY = 2  # inside a message body
_DONE = 3  # after <|return|>: the turn is over

# What a message body becomes
_REASONING = "reasoning"
_CONTENT = "content"
_TOOL = "tool"
_DROP = "drop"
_UNJUDGED = "unjudged"  # headerless text of a whole turn: how its message ends decides


def is_builtin_recipient(recipient: str) -> bool:
    return recipient.startswith(BUILTIN_PREFIXES)


def parse_header(header: str) -> tuple[str, str | None, str | None]:
    """Split a raw header (special tokens included) into (role, channel, recipient).

    The recipient may stand in the role part or the channel part; anything glued after it
    (`<|constrain|>json`, a doubled `<|channel|>`) is cut off.
    """
    role_match = _ROLE.match(header)
    role = role_match.group(1) if role_match else ""
    if role.startswith("to="):
        role = ""
    channel_match = _CHANNEL.search(header)
    recipient_match = _RECIPIENT.search(header)
    return (
        role or "assistant",
        channel_match.group(1) if channel_match else None,
        recipient_match.group(1) if recipient_match else None,
    )


class HarmonyDecoder:
    """Decode one assistant turn of Harmony text. Feed text pieces, then call `close()`.

    `whole`: the turn is all there (a non-streaming answer), so text with no header can wait to
    be judged by how its message ends. A headerless message closed by `<|end|>` with another
    message after it was not the answer (gpt-oss ends its answer with `<|return|>`): it becomes
    reasoning. A stream cannot wait for that without holding back every clean upstream's
    answer, so there such text is content at once."""

    def __init__(self, builtin_tools: str = "drop", whole: bool = False) -> None:
        self.builtin_tools = builtin_tools
        self.whole = whole
        self.recoveries: list[str] = []
        """Names of the repairs this turn needed, in order, each once."""
        self.tool_calls = 0
        self._state = _BETWEEN
        self._kind = _CONTENT
        self._pending = ""  # a held possible special-token prefix
        self._lead = ""  # held whitespace / partial `to=` between messages
        self._header = ""
        self._after_call = False  # between messages after <|call|>: only a new header counts
        self._seen_token = False
        self._emitted = False
        self._unjudged: list[str] = []  # headerless text of a whole turn (see `whole`)
        self._ended_unjudged = False  # ... whose message `<|end|>` closed

    # -- public ---------------------------------------------------------------------------

    def feed(self, text: str) -> list[Event]:
        if not text:
            return []
        if self._state == _BODY and not self._pending and "<" not in text:
            return self._body_text(text)  # the hot path: one token of message text
        out: list[Event] = []
        buf = self._pending + text
        self._pending = ""
        pos = 0
        for match in SPECIAL_TOKEN.finditer(buf):
            if match.start() > pos:
                self._on_text(buf[pos : match.start()], out)
            self._on_token(match.group(1), out)
            pos = match.end()
        tail = buf[pos:]
        cut = tail.rfind("<")
        if cut >= 0 and _SPECIAL_PREFIX.fullmatch(tail, cut):
            self._pending = tail[cut:]
            tail = tail[:cut]
        if tail:
            self._on_text(tail, out)
        return out

    def steady_body_event(self) -> type[Content] | type[Reasoning] | None:
        """What a text piece without `<` becomes when feeding it would change nothing here
        (inside a content or reasoning body, nothing held, the turn already said something)."""
        if self._state != _BODY or self._pending or not self._emitted:
            return None
        return _STEADY_EVENTS.get(self._kind)

    def close(self) -> list[Event]:
        """End of output: flush what is held and close an open message."""
        out: list[Event] = []
        if self._pending:  # at the end, a held `<|word` can no longer become a token: text
            held, self._pending = self._pending, ""
            self._on_text(held, out)
        if self._state == _BETWEEN and self._lead.strip() and not self._after_call:
            self._start_headerless(out)
        elif self._state == _HEADER:
            self._recover("header-without-message")
        elif self._state == _BODY:
            self._end_message(out)  # servers usually cut the stop token (<|call|>) off
        self._judge_headerless(out, answer=True)  # nothing came after it: it was the answer
        self._state = _DONE
        return out

    # -- text -----------------------------------------------------------------------------

    def _body_text(self, text: str) -> list[Event]:
        kind = self._kind
        if kind == _CONTENT:
            self._emitted = True
            return [Content(text)]
        if kind == _REASONING:
            self._emitted = True
            return [Reasoning(text)]
        if kind == _TOOL:
            return [ToolCallArgs(text)]
        if kind == _UNJUDGED:
            self._emitted = True  # as in a stream, where it went out as content
            self._unjudged.append(text)
        return []

    def _on_text(self, text: str, out: list[Event]) -> None:
        state = self._state
        if state == _BODY:
            out.extend(self._body_text(text))
        elif state == _HEADER:
            self._header_text(text, out)
        elif state == _BETWEEN:
            self._between_text(text, out)
        # _DONE: text after <|return|> is dropped
        elif text.strip():
            self._recover("text-after-end-dropped")

    def _header_text(self, text: str, out: list[Event]) -> None:
        self._header += text
        if len(self._header) > _HEADER_LIMIT:
            # Not a header after all: whatever it was, its words are the message.
            self._recover("oversized-header")
            self._lead, self._header = SPECIAL_TOKEN.sub("", self._header), ""
            self._state = _BETWEEN
            self._start_headerless(out)

    def _between_text(self, text: str, out: list[Event]) -> None:
        lead = self._lead + text
        stripped = lead.lstrip()
        if not stripped or stripped in ("t", "to"):
            self._lead = lead  # whitespace between messages, or maybe the start of `to=`
            return
        if stripped.startswith("to="):
            self._lead = ""
            self._begin_header(stripped)
            return
        if self._after_call:
            self._lead = ""
            self._recover("text-after-call-dropped")
            return
        self._lead = lead
        self._start_headerless(out)

    def _start_headerless(self, out: list[Event]) -> None:
        """Text with no header: a plain answer (clean upstream), or the final answer of
        llama.cpp's `--reasoning-format none`, which drops the final header."""
        text = self._lead if not self._seen_token else self._lead.lstrip()
        self._lead = ""
        if self._seen_token:
            self._recover("final-header-missing")
        self._judge_headerless(out, answer=False)
        self._state, self._kind = _BODY, _UNJUDGED if self.whole else _CONTENT
        out.extend(self._body_text(text))

    # -- tokens ---------------------------------------------------------------------------

    def _on_token(self, name: str, out: list[Event]) -> None:
        self._seen_token = True
        state = self._state
        if state == _BETWEEN:
            if self._lead.strip() and not self._after_call:
                self._start_headerless(out)
                self._on_token_in_body(name, out)
                return
            self._lead = ""
            if name == "start":
                self._begin_header("")
            elif name in ("channel", "constrain"):
                self._begin_header(f"<|{name}|>")
            elif name == "message":
                self._begin_header("")
                self._open_message(out)
            elif name in ("return", "call") and self._emitted_or_called():
                self._state = _DONE
            else:
                self._recover(f"stray-{name}-ignored")
        elif state == _HEADER:
            if name in ("channel", "constrain"):
                self._header += f"<|{name}|>"
            elif name == "message":
                self._open_message(out)
            else:
                self._recover("header-without-message")
                self._header = ""
                self._after_terminator(name)
        elif state == _BODY:
            self._on_token_in_body(name, out)

    def _on_token_in_body(self, name: str, out: list[Event]) -> None:
        if name in ("message", "constrain") or name not in _TERMINATORS:
            self._recover(f"stray-{name}-ignored")
            return
        if name in ("start", "channel"):
            self._recover("message-not-terminated")
        self._end_message(out, name)
        self._after_terminator(name)

    def _after_terminator(self, name: str) -> None:
        if name == "start":
            self._begin_header("")
        elif name == "channel":
            self._begin_header("<|channel|>")
        elif name == "return":
            self._state = _DONE
        else:
            self._state = _BETWEEN
            self._after_call = name == "call"

    def _emitted_or_called(self) -> bool:
        return self._emitted or self.tool_calls > 0

    # -- messages -------------------------------------------------------------------------

    def _begin_header(self, header: str) -> None:
        self._state = _HEADER
        self._header = header

    def _open_message(self, out: list[Event]) -> None:
        self._judge_headerless(out, answer=False)
        role, channel, recipient = parse_header(self._header)
        self._header = ""
        self._state = _BODY
        self._kind = self._classify(role, channel, recipient)
        if self._kind == _TOOL:
            assert recipient is not None
            name = recipient.removeprefix("functions.")
            self.tool_calls += 1
            self._after_call = False
            out.append(ToolCallBegin(name))

    def _classify(self, role: str, channel: str | None, recipient: str | None) -> str:
        if role != "assistant":
            self._recover("non-assistant-message-dropped")  # e.g. a hallucinated tool result
            return _DROP
        if self._after_call and not recipient:
            self._recover("text-after-call-dropped")
            return _DROP
        if recipient and recipient not in ("assistant", "all", "user"):
            if recipient.startswith("functions."):
                return _TOOL if len(recipient) > len("functions.") else _DROP
            if is_builtin_recipient(recipient):
                if self.builtin_tools == "surface":
                    return _TOOL
                self._recover("builtin-call-dropped")
                return _DROP
            return _TOOL
        if channel == "analysis":
            return _REASONING
        if channel not in ("final", "commentary", None):
            self._recover("unknown-channel")
        return _CONTENT

    def _end_message(self, out: list[Event], terminator: str | None = None) -> None:
        if self._kind == _TOOL:
            out.append(ToolCallEnd())
        elif self._kind == _UNJUDGED:
            self._ended_unjudged = terminator == "end"
            if not self._ended_unjudged:  # <|return|>, <|call|>, no terminator: the answer
                self._judge_headerless(out, answer=True)
        self._state = _BETWEEN
        self._kind = _CONTENT

    def _judge_headerless(self, out: list[Event], answer: bool) -> None:
        """Give out the held headerless text of a whole turn: as content if it was the answer,
        as reasoning if its message ended with `<|end|>` and another one followed."""
        if not self._unjudged:
            return
        text, self._unjudged = "".join(self._unjudged), []
        if self._ended_unjudged and not answer:
            self._recover("headerless-message-as-reasoning")
            out.append(Reasoning(text))
        else:
            out.append(Content(text))
        self._ended_unjudged = False

    def _recover(self, what: str) -> None:
        if what not in self.recoveries:
            self.recoveries.append(what)


_TERMINATORS = ("end", "call", "return", "start", "channel")
_STEADY_EVENTS: dict[str, type[Content] | type[Reasoning]] = {
    _CONTENT: Content,
    _REASONING: Reasoning,
}


def decode(text: str, builtin_tools: str = "drop") -> tuple[list[Event], HarmonyDecoder]:
    """Decode a whole turn at once (non-streaming responses, history messages)."""
    decoder = HarmonyDecoder(builtin_tools)
    events = decoder.feed(text)
    events += decoder.close()
    return events, decoder
