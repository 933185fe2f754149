"""Damaged dialects of Harmony text -> canonical Harmony markup, before the decoder reads it.

Two upstream habits lose the markup the decoder routes by:

- servers that detokenize with `skip_special_tokens` drop the special tokens but keep the words
  between them: `analysisThe user asks…assistantfinalThe answer is 4.`, and tool calls as
  `assistantcommentary to=functions.get_weather json{"city":"Paris"}`;
- AWS Bedrock puts the analysis inside `content` as `<reasoning>…</reasoning>`, and when
  streaming wraps every delta on its own, so a seam `</reasoning><reasoning>` may split a word.

`DialectTranslator` looks at the first non-whitespace characters of a turn. Only when they
unambiguously show one of these dialects does it rewrite the text, piece by piece, into the markup
the decoder already reads; otherwise it hands every piece on untouched. Like the decoder, it gives
the same text however its input is cut, holds back a bounded tail only, and never raises.
"""

import re

from .decoder import SPECIAL_TOKEN

HOLD_LIMIT = 256
"""The most text held back while a turn's start, a call header or a seam is undecided. Past it we
stop translating that piece and pass it on as it is."""

STRIPPED_MARKERS = "stripped-markers"
REASONING_TAGS = "reasoning-tags"
_PLAIN = "plain"

# Marker-stripped Harmony: `<|start|>assistant<|channel|>final<|message|>` became `assistantfinal`.
_MARKER_WORDS = ("assistantfinal", "assistantanalysis", "assistantcommentary", "assistantcode")
_MARKER = re.compile(r"assistant(final|analysis|commentary|code)")
_FIRST_CHANNEL = re.compile(r"analysis|commentary")  # a turn's first header has no `assistant`
_STRIPPED_STARTS = ("analysis to=", "commentary to=", *_MARKER_WORDS)
_RECIPIENT = " to="
_ARGUMENTS_START = re.compile(r"[{\[]")
_CALL_HEADER = re.compile(r"\s*to=([^\s<{\[]+)\s*(?:[a-z]+\s*)?")
"""What may stand between a channel word and the arguments: ` to=NAME`, then an optional content
type (` json`, ` code`, `<|constrain|>json` with the token turned into a space)."""

# Bedrock reasoning tags.
_OPEN_TAG = "<reasoning>"
_CLOSE_TAG = "</reasoning>"
_TAGS = (_OPEN_TAG, _CLOSE_TAG)
_TAG = re.compile(r"</?reasoning>")
_FINAL_AFTER_REASONING = "<|end|><|start|>assistant<|channel|>final<|message|>"


def _sniff(raw: str) -> str | None:
    """The dialect a turn is in, from its first non-whitespace characters; None: not known yet.

    `analysis` counts only when glued to what follows (`analysisThe`, `analysis**`): text that
    merely begins with the word (`analysis of…`) is plain.
    """
    probe = raw[:HOLD_LIMIT]
    head = probe.lstrip()
    if head.startswith(_OPEN_TAG):
        return REASONING_TAGS
    if head.startswith(_STRIPPED_STARTS):
        return STRIPPED_MARKERS
    if head.startswith("analysis") and len(head) > 8 and not (head[8] == " " or head[8].islower()):
        return STRIPPED_MARKERS
    could_grow = any(start.startswith(head) for start in (_OPEN_TAG, *_STRIPPED_STARTS))
    return None if could_grow and len(raw) < HOLD_LIMIT else _PLAIN


def _next_marker(
    text: str, pattern: re.Pattern[str], words: tuple[str, ...]
) -> tuple[str, re.Match[str] | None, str]:
    """Split `text` at the first match of `pattern`: (before, match, after). Without a match,
    `after` is the end of `text` that could still grow into one of `words` (the part to hold)."""
    match = pattern.search(text)
    if match:
        return text[: match.start()], match, text[match.end() :]
    longest = max(map(len, words))
    for start in range(max(len(text) - longest + 1, 0), len(text)):
        if any(word.startswith(text[start:]) for word in words):
            return text[:start], None, text[start:]
    return text, None, ""


# States of a marker-stripped turn
_BODY = 0  # in a message's text (or before the first message)
_HEADER = 1  # after a channel word: a recipient and a content type may follow
_ARGUMENTS = 2  # in a call's arguments: JSON to the end of the turn, never translated


class _HeldText:
    """A translator that keeps what it cannot decide on yet in `_held` and turns the rest into
    markup one `_step` at a time (each returns whether it made progress)."""

    def __init__(self, head: str) -> None:
        self._held = head
        self._in_message = False

    def _step(self, out: list[str]) -> bool:
        raise NotImplementedError

    def feed(self, text: str) -> str:
        self._held += text
        out: list[str] = []
        while self._step(out):
            pass
        return "".join(out)

    def _open(self, channel: str) -> str:
        """The canonical start of a message header; it ends the message before, if any."""
        opening = "<|end|><|start|>assistant" if self._in_message else ""
        self._in_message = True
        return f"{opening}<|channel|>{channel}"


class _StrippedMarkers(_HeldText):
    """`analysis…assistantfinal…` -> `<|channel|>analysis<|message|>…<|end|><|start|>assistant
    <|channel|>final<|message|>…`, and `assistantcommentary to=NAME json{…}` -> a call header."""

    def __init__(self, head: str) -> None:
        first = _FIRST_CHANNEL.match(head)
        super().__init__(head[first.end() :] if first else head)
        self._state = _HEADER if first else _BODY
        self._marker = first.group() if first else ""  # as written: given back if no header
        self._channel = self._marker

    def feed(self, text: str) -> str:
        return text if self._state == _ARGUMENTS else super().feed(text)

    def close(self) -> str:
        out = [self.feed("")]
        held, self._held = self._held, ""
        if self._state == _HEADER:
            # A call header cut off before its arguments stays a header without a message,
            # which the decoder drops; anything else opens the message.
            message = "" if held.startswith(_RECIPIENT) else "<|message|>"
            out.append(self._open(self._channel) + message)
        out.append(held)
        return "".join(out)

    def _step(self, out: list[str]) -> bool:
        """Translate what is held as far as it goes; False when more text is needed."""
        if self._state == _BODY:
            before, marker, self._held = _next_marker(self._held, _MARKER, _MARKER_WORDS)
            out.append(before)
            if marker is None:
                return False
            self._state, self._marker, self._channel = _HEADER, marker.group(), marker.group(1)
            return True
        if self._state == _HEADER:
            return self._header(out)
        out.append(self._held)
        self._held = ""
        return False

    def _header(self, out: list[str]) -> bool:
        held = self._held
        if not held.startswith(_RECIPIENT):
            if _RECIPIENT.startswith(held):
                return False  # maybe the start of ` to=`
            out.append(self._open(self._channel) + "<|message|>")
            self._state = _BODY
            return True
        probe = held[:HOLD_LIMIT]
        arguments = _ARGUMENTS_START.search(probe)
        if arguments is None and len(held) < HOLD_LIMIT:
            return False
        if arguments is not None:
            call = _CALL_HEADER.fullmatch(SPECIAL_TOKEN.sub(" ", probe[: arguments.start()]))
            if call:
                opening = self._open(self._channel)
                out.append(f"{opening} to={call.group(1)} <|constrain|>json<|message|>")
                self._state, self._held = _ARGUMENTS, held[arguments.start() :]
                return True
        # No call header after all: the marker was text of the message it stood in.
        out.append(self._marker)
        self._state = _BODY
        return True


# States of a turn with reasoning tags
_OUTSIDE = 0  # in the answer (or before the first tag)
_INSIDE = 1  # between <reasoning> and </reasoning>
_CLOSED = 2  # just after </reasoning>: a seam, or the answer, follows


class _ReasoningTags(_HeldText):
    """`<reasoning>a</reasoning><reasoning>b</reasoning>c` -> `<|channel|>analysis<|message|>ab
    <|end|><|start|>assistant<|channel|>final<|message|>c`: the inner texts join as they are, the
    text outside the tags is the answer, to the character. Whitespace that only separates two
    reasoning pieces, or trails the last one, is layout and is dropped."""

    def __init__(self, head: str) -> None:
        super().__init__(head)
        self._state = _OUTSIDE

    def close(self) -> str:
        out = [self.feed("")]
        held, self._held = self._held, ""
        if self._state == _CLOSED:
            out.append(_FINAL_AFTER_REASONING + held if held.strip() else "<|end|>")
        else:
            out.append(held)
        return "".join(out)

    def _step(self, out: list[str]) -> bool:
        if self._state == _CLOSED:
            return self._after_close(out)
        before, tag, self._held = _next_marker(self._held, _TAG, _TAGS)
        out.append(before)
        if tag is None:
            return False
        if self._state == _INSIDE and tag.group() == _CLOSE_TAG:
            self._state = _CLOSED
        elif self._state == _OUTSIDE and tag.group() == _OPEN_TAG:
            out.append(self._open("analysis") + "<|message|>")
            self._state = _INSIDE
        return True  # a tag where it means nothing (a nested open, a stray close) is dropped

    def _after_close(self, out: list[str]) -> bool:
        probe = self._held[:HOLD_LIMIT]
        rest = probe.lstrip()
        for tag in _TAGS:
            if rest.startswith(tag):
                # A seam: the reasoning goes on (a doubled close is dropped).
                self._state = _INSIDE if tag == _OPEN_TAG else _CLOSED
                self._held = self._held[len(probe) - len(rest) + len(tag) :]
                return True
        if len(self._held) < HOLD_LIMIT and any(tag.startswith(rest) for tag in _TAGS):
            return False
        out.append(_FINAL_AFTER_REASONING)
        self._state = _OUTSIDE
        return True


class DialectTranslator:
    """Translate one choice's content text, piece by piece, for the HarmonyDecoder.

    `dialect` names the dialect found (None: the text passes untouched).
    """

    def __init__(self) -> None:
        self.dialect: str | None = None
        self._raw = ""  # the turn's start, held until the dialect is known
        self._sniffing = True
        self._translator: _StrippedMarkers | _ReasoningTags | None = None

    def feed(self, text: str) -> str:
        if self._translator is not None:
            return self._translator.feed(text)
        if not self._sniffing:
            return text  # the hot path: plain Harmony, or clean text
        self._raw += text
        dialect = _sniff(self._raw)
        if dialect is None:
            return ""
        raw, self._raw, self._sniffing = self._raw, "", False
        if dialect == _PLAIN:
            return raw
        self.dialect = dialect
        # Whitespace before the first marker is layout: the decoder would drop it anyway.
        head = raw.lstrip()
        self._translator = (
            _StrippedMarkers(head) if dialect == STRIPPED_MARKERS else _ReasoningTags(head)
        )
        return self._translator.feed("")

    @property
    def passes_through(self) -> bool:
        """Plain Harmony (or clean text) found: every piece passes untouched from now on."""
        return self._translator is None and not self._sniffing

    def close(self) -> str:
        """End of the turn: give back what is held."""
        if self._translator is not None:
            return self._translator.close()
        raw, self._raw, self._sniffing = self._raw, "", False
        return raw
