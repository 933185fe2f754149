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
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .openai_shapes import Delta
from .openai_shapes import make_chunk
from .outcome import Outcome
from .pipeline import ChoicePipeline
from .pipeline import RewriteConfig
from .sse import SseDecoder
from .sse import SseEvent
from .sse import encode_event
from .upstream_errors import error_message
from .upstream_errors import openai_error

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


class StreamRewriter:
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
        self._started = clock()

    def __call__(self, data: bytes) -> list[bytes]:
        self.calls += 1
        if self.timed_out:
            return []  # the client already got its error and [DONE]
        if self._passthrough:
            return [data] if data else []
        if self._no_final_in_time():
            return self._time_out()
        out: list[bytes] = []
        events = self._sse.feed(data) if data else self._sse.flush()
        for event in events:
            if self._passthrough:
                out.append(event.raw)
                continue
            try:
                out += self._on_event(event, cut_off=not data)
            except Exception:
                logger.exception(
                    "harmony-filter: cannot rewrite an SSE event; passing the rest through"
                )
                self._warn("internal-error-passthrough")
                self._passthrough = True
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

    def _no_final_in_time(self) -> bool:
        limit = self.config.no_final_timeout
        return bool(
            limit and self.outcome.first_output_at is None and self._clock() - self._started > limit
        )

    def _time_out(self) -> list[bytes]:
        """gpt-oss can reason for ever; past the limit, end the stream for the client cleanly."""
        self.timed_out = True
        limit = self.config.no_final_timeout
        logger.warning(
            "harmony-filter: no content or tool call after %gs: ending the stream", limit
        )
        self._warn("no-final-timeout")
        error = openai_error(
            f"harmony-filter: the model produced no answer or tool call within {limit:g} s",
            kind="timeout",
        )
        error["error"]["code"] = "no_final_timeout"
        return [encode_event(json.dumps(error)), b"data: [DONE]\n\n"]

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
            error = openai_error("harmony-filter: the upstream ended the stream before the answer")
            error["error"]["code"] = "upstream_stream_cut_short"
            out += [encode_event(json.dumps(error)), b"data: [DONE]\n\n"]
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
            return self._non_chunk(event, data, chunk)
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
        return out

    def _non_chunk(self, event: SseEvent, data: str, value: Any) -> list[bytes]:
        """Not a chunk: an error object (Ollama once sent `{"error parsing tool call": …}`)
        goes out in OpenAI's error shape, anything else as the server sent it."""
        if not isinstance(value, dict) or not any("error" in key.lower() for key in value):
            return [event.raw]
        self._upstream_error = True
        message = error_message(data.encode())
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
