"""The per-flow stream rewriter: upstream SSE bytes in, clean chat.completion.chunk SSE out.

mitmproxy calls it with each piece of the body as it arrives and once with b"" at the end
(see mitmproxy's `http-stream-modify` example). It must never return b"" before the end (on
HTTP/1 that is the end-of-body marker: we return [] to hold back) and must never raise (a
raising callable silently loses that chunk): on an internal error it degrades to passing the
rest of the stream through untouched.

What it sends is valid SSE whose every `data:` is JSON or [DONE], whatever the upstream sent:
an event that is not JSON is dropped (an OpenAI client would stop on it), bad UTF-8 is replaced,
and a stream that ends before its answer does gets an OpenAI error event and [DONE], so the
client learns that it was cut short.
"""

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..api.chat_completions import Delta
from ..api.chat_completions import make_chunk
from ..api.errors import json_error_message
from ..api.errors import openai_error
from ..api.sse import SseDecoder
from ..api.sse import SseEvent
from ..api.sse import encode_event
from .outcome import Outcome
from .pipeline import ChoicePipeline
from .pipeline import RewriteConfig

logger = logging.getLogger(__name__)


def _compact_json() -> Callable[[Any], str]:
    """JSON without spaces, non-ASCII kept, from json's C encoder made once: json.dumps and
    JSONEncoder.encode make a new one per call, a third of what encoding a chunk costs."""
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
    try:
        from json.encoder import c_make_encoder  # type: ignore[attr-defined]
        from json.encoder import encode_basestring

        encode = c_make_encoder(
            None, encoder.default, encode_basestring, None, ":", ",", False, False, True
        )
    except (ImportError, TypeError):  # no C accelerator
        return encoder.encode
    return lambda value: "".join(encode(value, 0))


_to_json = _compact_json()
_SCAN = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _loads(data: str) -> Any:
    """json.loads, without its two whitespace searches when the JSON fills `data` (per event)."""
    try:
        value, end = _SCAN(data, 0)
    except (StopIteration, ValueError):
        end = -1
    return value if end == len(data) else json.loads(data)


@dataclass(slots=True)
class _Choice:
    pipeline: ChoicePipeline
    role_sent: bool = False
    finished: bool = False


_scan_string = json.decoder.scanstring  # type: ignore[attr-defined]
_encode_string = json.encoder.encode_basestring  # type: ignore[attr-defined]
_CONTENT_VALUE = re.compile(r'"content"\s*:\s*"')
_SENTINEL = "\x00harmony-filter\x00"
"""Text no upstream sends: it marks where the text goes in a chunk made once."""
_SENTINEL_JSON = _encode_string(_SENTINEL)
_PLAIN_TEXT = re.compile(rb'[^"\\<\x00-\x1f]+')
"""The bytes of a JSON string without `<` or escapes."""
_ESCAPED_TEXT = re.compile(rb'(?:[^"\\<\x00-\x1f]|\\["\\bfnrt])+')
"""The same with the escapes we write the same way (so its bytes are ours as they are)."""


@dataclass(frozen=True, slots=True)
class _RawFrame:
    """A steady event as the bytes of one whole SSE event: `data: HEAD"text"TAIL` and its blank
    line; the chunk it makes is the text between OUT pieces. For such an event (nearly every one
    at full speed) we skip the SSE framing, the decoding and the JSON string scan too: the
    text's bytes go from the upstream's event into ours as they are."""

    head: bytes
    tail: bytes
    out: list[bytes]
    note: Callable[[str], None]

    def rewrite(self, data: bytes) -> list[bytes] | None:
        """What `data` becomes, if it is exactly such an event."""
        if not (data.startswith(self.head) and data.endswith(self.tail)):
            return None
        raw = data[len(self.head) : len(data) - len(self.tail)]
        if not (_PLAIN_TEXT.fullmatch(raw) or _ESCAPED_TEXT.fullmatch(raw)):
            return None
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            return None  # the SSE decoder replaces the bad bytes
        self.note(_scan_string(text + '"', 0)[0] if "\\" in text else text)
        return [raw.join(self.out)]


@dataclass(slots=True)
class _SteadyText:
    """The fast path for the usual event of a raw-Harmony stream: one token of message text in
    `{"choices":[{"delta":{"content":"tok"},…}],…}`, the same around it as in the last event.

    After an event like that leaves every layer in a steady state (see
    ChoicePipeline.steady_text), the next event whose JSON is the same text around another
    content string would do exactly what this one did with other text: so we skip parsing
    it, the pipeline and the chunk's encoding, and write the chunk from its JSON pieces.
    Anything else (another shape, a `<`, a finish, a cut event) takes the full path."""

    head: str
    """The event's JSON before the content string (its quote excluded), and after it."""
    tail: str
    choice: _Choice
    index: int
    keys: tuple[str, ...]
    note: Callable[[str], None]
    pieces: list[str] | None = None
    """The chunk's JSON split where the text goes (None until the next event matches)."""
    frame: _RawFrame | None = None
    """The same as bytes, when the event has no other SSE field and makes a chunk."""


class StreamRewriter:
    fast_path = True
    """Off only to check, in the tests, that the fast path changes nothing."""

    def __init__(self, config: RewriteConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.outcome = Outcome()
        self.warnings: list[str] = []
        self.calls = 0
        """How many times mitmproxy called us (0: the body never streamed through us)."""
        self.timed_out = False
        self._sse = SseDecoder()
        self._choices: dict[int, _Choice] = {}
        self._envelope: dict[str, Any] = {}
        self._passthrough = False
        self._done = False  # the upstream sent [DONE]
        self._upstream_error = False  # the upstream sent an error event
        self._clock = clock
        limit = config.no_final_timeout
        self._deadline = clock() + limit if limit else None
        self._steady: _SteadyText | None = None
        self._steady_failed = False  # the content string could not be pinned: no fast path

    def __call__(self, data: bytes) -> list[bytes]:
        self.calls += 1
        if self.timed_out:
            return []  # the client already got its error and [DONE]
        if self._passthrough:
            return [data] if data else []
        if self._deadline is not None and self._no_final_in_time(self._deadline):
            return self._time_out()
        steady = self._steady
        if steady is not None and steady.frame is not None and self._sse.idle:
            try:
                rewritten = steady.frame.rewrite(data)
            except Exception:
                self._give_up()
                return [data]
            if rewritten is not None:
                return rewritten
        out: list[bytes] = []
        events = self._sse.feed(data) if data else self._sse.flush()
        for event in events:
            if self._passthrough:
                out.append(event.raw)
                continue
            try:
                out += self._on_event(event, cut_off=not data)
            except Exception:
                self._give_up()
                out.append(event.raw)
        if not data and not self._passthrough:
            try:
                out += self._end()
            except Exception:
                logger.exception("harmony-filter: cannot close the stream cleanly")
                self._warn("internal-error-passthrough")
        # One piece: mitmproxy writes each piece to the client on its own (an HTTP chunk and a
        # send each), which at full speed would cost more than the rewriting itself.
        return [b"".join(out)] if out else []

    def _give_up(self) -> None:
        """A bug of ours must not cost the client its answer: the rest passes through as is."""
        logger.exception("harmony-filter: cannot rewrite an SSE event; passing the rest through")
        self._warn("internal-error-passthrough")
        self._passthrough = True

    def _no_final_in_time(self, deadline: float) -> bool:
        return self.outcome.first_output_at is None and self._clock() > deadline

    def _time_out(self) -> list[bytes]:
        """gpt-oss can reason for ever; past the limit, end the stream for the client cleanly."""
        self.timed_out = True
        limit = self.config.no_final_timeout
        logger.warning(
            "harmony-filter: no content or tool call after %gs: ending the stream", limit
        )
        self._warn("no-final-timeout")
        return _error_then_done(
            f"harmony-filter: the model produced no answer or tool call within {limit:g} s",
            "no_final_timeout",
            kind="timeout",
        )

    def _end(self) -> list[bytes]:
        """The end of the body: flush every choice; a stream that stops before [DONE] with no
        answer or an unfinished one was cut short upstream, and the client is told so."""
        cut_short = not (self._done or self._upstream_error) and not (
            self._choices and all(state.finished for state in self._choices.values())
        )
        out = self._close_choices()
        if cut_short:
            self._warn(
                "upstream-stream-cut-short",
                "the upstream stream ended before its answer did: the client got what was "
                "decoded, then an error event",
            )
            out += _error_then_done(
                "harmony-filter: the upstream ended the stream before the answer",
                "upstream_stream_cut_short",
            )
        return out

    # -- events ---------------------------------------------------------------------------

    def _on_event(self, event: SseEvent, cut_off: bool = False) -> list[bytes]:
        """`cut_off`: the event lacks its blank line (the body ended there)."""
        if event.replaced:
            self._warn(
                "invalid-utf8-replaced",
                "an upstream event was not UTF-8: its bad bytes were replaced by U+FFFD",
            )
        data = event.data
        if data is None:
            return [event.raw]  # comments, keep-alives
        if self._steady is not None:
            fast = self._steady_event(self._steady, data, event.fields)
            if fast is not None:
                return fast
            self._steady = None
        if data.strip() == "[DONE]":
            self._done = True
            return self._close_choices() + [event.raw]
        try:
            chunk = _loads(data)
        except ValueError:
            if not cut_off:  # a cut-off one is the end of a stream cut short: said in _end
                self._warn(
                    "invalid-json-event-dropped",
                    "an upstream event was not JSON: dropped it (an OpenAI client would stop on "
                    "it)",
                )
            return []
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        if not isinstance(choices, list):
            return self._non_chunk(event, chunk)
        if not choices:
            if isinstance(chunk.get("usage"), dict):
                self.outcome.usage = chunk["usage"]
            return self._close_choices() + [event.raw]  # the usage chunk comes last
        del chunk["choices"]
        self._envelope = chunk  # what is left
        out: list[bytes] = []
        for choice in choices:
            if isinstance(choice, dict):
                out += self._on_choice(choice, event.fields)
        if self.fast_path and len(choices) == 1 and not self._steady_failed:
            self._steady = self._steady_after(data, choices[0])
        return out

    # -- the fast path --------------------------------------------------------------------

    def _steady_after(self, data: str, choice: Any) -> _SteadyText | None:
        """The fast path for events like this one, if it was one token of text that left its
        choice steady."""
        if not isinstance(choice, dict) or choice.get("finish_reason") is not None:
            return None
        delta, index = choice.get("delta"), choice.get("index")
        if not (isinstance(delta, dict) and delta.keys() == {"content"} and type(index) is int):
            return None
        state = self._choices[index]
        steady = state.pipeline.steady_text()
        if steady is None or state.finished or not state.role_sent or "usage" in self._envelope:
            return None
        found = _CONTENT_VALUE.match(data, max(0, data.rfind('"content"')))
        if found is None:
            return None
        try:
            text, end = _scan_string(data, found.end())
        except ValueError:
            return None
        if text != delta["content"]:
            return None
        head, tail = data[: found.end() - 1], data[end:]
        return _SteadyText(head, tail, state, index, *steady)

    def _steady_event(
        self, steady: _SteadyText, data: str, fields: list[bytes]
    ) -> list[bytes] | None:
        """The event on the fast path, or None when it must take the full one."""
        head, tail = steady.head, steady.tail
        start, stop = len(head), len(data) - len(tail)
        if stop <= start or not (data.startswith(head) and data.endswith(tail)):
            return None
        if data[start] != '"':
            return None
        try:
            text, end = _scan_string(data, start + 1)
        except ValueError:
            return None
        if end != stop or not text or "<" in text:
            return None
        if steady.pieces is None and not self._pin(steady, framed=not fields):
            self._steady_failed = True
            return None
        steady.note(text)
        if steady.pieces is None or not steady.keys:
            return []
        return [encode_event(_encode_string(text).join(steady.pieces), fields)]

    def _pin(self, steady: _SteadyText, framed: bool) -> bool:
        """Prove that the string between head and tail is the choice's content (not another
        string, nor a duplicate key's), and split the chunk those events make (`framed`: as
        bytes too, for events with no other SSE field)."""
        try:
            probe = _loads(steady.head + _SENTINEL_JSON + steady.tail)
            if probe["choices"][0]["delta"]["content"] != _SENTINEL:
                return False
        except (ValueError, LookupError, TypeError):
            return False
        delta = dict.fromkeys(steady.keys, _SENTINEL)
        encoded = _to_json(make_chunk(self._envelope, steady.index, delta, None))
        pieces = encoded.split(_SENTINEL_JSON)
        if len(pieces) != len(steady.keys) + 1:
            return False
        steady.pieces = pieces
        if framed and steady.keys:
            steady.frame = _RawFrame(
                f'data: {steady.head}"'.encode(),
                f'"{steady.tail}\n\n'.encode(),
                encode_event(encoded).split(_SENTINEL_JSON[1:-1].encode()),
                steady.note,
            )
        return True

    def _non_chunk(self, event: SseEvent, value: Any) -> list[bytes]:
        """Not a chunk: an error object (Ollama once sent `{"error parsing tool call": …}`)
        goes out in OpenAI's error shape, anything else as the server sent it."""
        if not isinstance(value, dict) or not any("error" in key.lower() for key in value):
            return [event.raw]
        self._upstream_error = True
        message = json_error_message(value)
        if message is None:
            return [event.raw]  # already an OpenAI error
        self._warn("upstream-error-in-stream")
        return [encode_event(json.dumps(openai_error(message)), event.fields)]

    def _on_choice(self, choice: dict[str, Any], fields: list[bytes]) -> list[bytes]:
        index = choice.get("index")
        state = self._choice(index if isinstance(index, int) else 0)
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        deltas = state.pipeline.feed(delta)
        finish = choice.get("finish_reason")
        if not (finish and isinstance(finish, str)) or state.finished:
            if delta.get("role") and not deltas and not state.role_sent:
                deltas = [{"content": ""}]
            return self._chunks(state, index, deltas, None, fields)
        return self._finish_choice(state, index, deltas, finish, fields)

    def _finish_choice(
        self,
        state: _Choice,
        index: Any,
        deltas: list[Delta],
        upstream_finish: str | None,
        fields: list[bytes],
    ) -> list[bytes]:
        more = state.pipeline.close()
        state.finished = True
        finish_reason = state.pipeline.finish_reason(upstream_finish)
        return self._chunks(state, index, deltas + more or [{}], finish_reason, fields)

    def _close_choices(self) -> list[bytes]:
        out: list[bytes] = []
        for index, state in self._choices.items():
            if not state.finished:
                out += self._finish_choice(state, index, [], None, [])
        return out

    # -- output ---------------------------------------------------------------------------

    def _choice(self, index: int) -> _Choice:
        state = self._choices.get(index)
        if state is None:
            state = _Choice(ChoicePipeline(self.config, self.outcome))
            self._choices[index] = state
        return state

    def _chunks(
        self,
        state: _Choice,
        index: Any,
        deltas: list[Delta],
        finish_reason: str | None,
        fields: list[bytes],
    ) -> list[bytes]:
        if not deltas:
            return []
        if not state.role_sent:
            state.role_sent = True
            deltas[0] = {"role": "assistant"} | deltas[0]
        envelope = self._envelope
        usage = envelope.get("usage")
        if usage is not None:
            envelope = {key: value for key, value in envelope.items() if key != "usage"}
            self.outcome.usage = usage if isinstance(usage, dict) else None
        out = []
        last = len(deltas) - 1
        for position, delta in enumerate(deltas):
            chunk = make_chunk(
                envelope,
                index if isinstance(index, int) else 0,
                delta,
                finish_reason if position == last else None,
            )
            if usage is not None and position == last:
                chunk["usage"] = usage
            out.append(encode_event(_to_json(chunk), fields))
        return out

    def _warn(self, what: str, message: str | None = None) -> None:
        if what not in self.warnings:
            self.warnings.append(what)
            logger.warning("harmony-filter: %s", message or what)


def _error_then_done(message: str, code: str, kind: str = "upstream_error") -> list[bytes]:
    """Ending a stream for the client on our side: an OpenAI error event, then [DONE]."""
    error = json.dumps(openai_error(message, code, kind))
    return [encode_event(error), b"data: [DONE]\n\n"]
