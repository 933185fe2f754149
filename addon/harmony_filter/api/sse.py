"""Server-sent events framing: bytes cut anywhere -> whole events -> bytes.

Only what we need of the SSE spec: events end at a blank line; lines end in LF, CRLF or CR;
`data:` lines (one space after the colon is optional) join with LF; other lines (`event:`,
`id:`, `: comments`) are kept so an event we rewrite keeps them. Like a browser's EventSource,
we read the stream as UTF-8 with bad bytes replaced: what we pass on is always valid UTF-8.
"""

from dataclasses import dataclass


@dataclass(slots=True)
class SseEvent:
    raw: bytes
    """The event as received (line ends normalised to LF, bytes that are not UTF-8 replaced by
    U+FFFD), blank line included."""
    data: str | None
    """The joined `data:` lines, or None when there are none."""
    fields: list[bytes]
    """The other lines, in order."""
    replaced: bool = False
    """The event had bytes that are not UTF-8 (replaced by U+FFFD)."""


class SseDecoder:
    def __init__(self) -> None:
        self._buf = b""
        self._cr_held = False  # a CR ended the last read; its LF may start the next one

    def feed(self, data: bytes) -> list[SseEvent]:
        if self._cr_held:
            data, self._cr_held = b"\r" + data, False
        if b"\r" in data:
            if data.endswith(b"\r"):
                data, self._cr_held = data[:-1], True
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        # The old buffer holds no event end, so only its last byte can start one.
        buf = self._buf + data if self._buf else data
        end = buf.find(b"\n\n", max(0, len(self._buf) - 1))
        if end < 0:
            self._buf = buf
            return []
        events = []
        start = 0
        while end >= 0:
            block = buf[start:end].lstrip(b"\n")  # (never ends in LF: `end` is the first LF LF)
            if block:
                events.append(parse_event(block))
            start = end + 2
            end = buf.find(b"\n\n", start)
        self._buf = buf[start:]
        return events

    @property
    def idle(self) -> bool:
        """Nothing held: the next piece starts afresh."""
        return not self._buf and not self._cr_held

    def flush(self) -> list[SseEvent]:
        """The end of the body: an event missing its final blank line still counts."""
        block, self._buf, self._cr_held = self._buf.rstrip(b"\n"), b"", False
        return [parse_event(block.lstrip(b"\n"))] if block.strip() else []


def parse_event(block: bytes) -> SseEvent:
    replaced = False
    try:
        text = block.decode()
    except UnicodeDecodeError:
        text = block.decode(errors="replace")
        block, replaced = text.encode(), True
    if text.startswith("data:") and "\n" not in text:  # the usual event: one data line
        payload = text[6:] if text.startswith(" ", 5) else text[5:]
        return SseEvent(block + b"\n\n", payload, [], replaced)
    data_lines: list[bytes] = []
    fields: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data_lines.append(value[1:] if value.startswith(b" ") else value)
        else:
            fields.append(line)
    data = b"\n".join(data_lines).decode() if data_lines else None
    return SseEvent(block + b"\n\n", data, fields, replaced)


def encode_event(data: str, fields: list[bytes] | None = None) -> bytes:
    head = b"\n".join(fields) + b"\n" if fields else b""
    return head + b"data: " + data.encode() + b"\n\n"
