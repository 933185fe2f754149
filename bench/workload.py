"""What the benchmark upstream streams: gpt-oss turns cut into real tokens, one token per event.

A turn is the Harmony text a non-parsing llama.cpp puts into `delta.content`: the analysis
message, then the final answer (or a tool call with JSON arguments). It is cut with gpt-oss's own
tokenizer (openai-harmony, vocabulary from the local cache), so pieces are ~4 characters and each
special token is a piece of its own. Token ids travel along, so the decoder benchmark can feed
openai-harmony's parser the very same text.
"""

import json
from dataclasses import dataclass
from typing import Any

ANALYSIS = """\
The user asks how to make the CSV import faster. They have a Python script that reads a 2 GB \
file row by row with csv.reader, converts each row to a dict, validates the fields and inserts \
the rows one at a time into PostgreSQL. That is slow for three reasons: one round trip per row, \
one transaction per row (autocommit), and Python-level work on every field. We should suggest \
COPY FROM STDIN through psycopg's copy API, batching, and moving validation into the database or \
doing it vectorised. Also mention indexes: dropping secondary indexes during the load and \
recreating them afterwards is usually faster. Maybe mention unlogged tables for staging. The \
answer should be concrete: a short code sample, the expected speed-up, and the caveats (memory, \
error handling when one row is bad). Keep it structured with headings and a numbered list. \
"""

FINAL = """\
## Why the import is slow

Your loop pays for **one network round trip and one transaction per row**. With 20 million rows \
that is 20 million commits — the database spends most of its time flushing the WAL, not storing \
data.

## What to do instead

1. **Use `COPY`**, which streams rows in bulk:

```python
import psycopg

with psycopg.connect(DSN) as conn, conn.cursor() as cur:
    with cur.copy("COPY staging (id, name, amount) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
```

2. **Load into a staging table** (`UNLOGGED`, no indexes), then `INSERT … SELECT` the valid \
rows into the real table in one statement.
3. **Drop secondary indexes** before the load and recreate them afterwards.

Expect 20–50× faster imports: minutes instead of hours. A bad row makes `COPY` fail as a \
whole, so validate in the staging step (`WHERE amount ~ '^[0-9.]+$'`) rather than row by row. \
"""

TOOL_ANALYSIS = """\
The user wants the import script rewritten to use COPY. I will write the new file with the \
write_file tool: a staging table, COPY FROM STDIN, then one INSERT … SELECT. \
"""

TOOL_NAME = "write_file"
TOOL_CODE = '''\
"""Bulk CSV import through a staging table."""

import csv
import sys

import psycopg

DSN = "postgresql://app@localhost/app"


def load(path: str) -> int:
    with psycopg.connect(DSN) as conn, conn.cursor() as cur:
        cur.execute("CREATE UNLOGGED TABLE IF NOT EXISTS staging (LIKE payments)")
        with open(path, newline="") as f, cur.copy("COPY staging FROM STDIN") as copy:
            for row in csv.reader(f):
                copy.write_row(row)
        cur.execute("INSERT INTO payments SELECT * FROM staging WHERE amount > 0")
        return cur.rowcount


if __name__ == "__main__":
    print(f"imported {load(sys.argv[1])} rows")
'''
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": "Write a file",
            "parameters": {
                "type": "object",
                "required": ["path", "content"],
                "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            },
        },
    }
]

FINAL_MARKER = "<|channel|>final<|message|>"
"""Where the final answer starts in Harmony text."""
ANALYSIS_SHARE = 0.3
"""Share of an answer's tokens that are reasoning (the rest is the final answer), by default."""


@dataclass(frozen=True, slots=True)
class Turn:
    pieces: list[str]
    """Text of each event's delta.content: one token each (a character cut in two by the
    tokenizer waits for its other half, as llama.cpp does)."""
    token_ids: list[list[int]]
    """The token ids behind each piece."""

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class Tokenizer:
    def __init__(self) -> None:
        from openai_harmony import HarmonyEncodingName
        from openai_harmony import load_harmony_encoding

        self.encoding = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)

    def turn(self, text: str) -> Turn:
        pieces: list[str] = []
        token_ids: list[list[int]] = []
        held: list[int] = []
        for token in self.encoding.encode(text, allowed_special="all"):
            held.append(token)
            try:
                piece = self.encoding.decode_utf8(held)
            except Exception:  # half a UTF-8 character: wait for the rest
                continue
            pieces.append(piece)
            token_ids.append(held)
            held = []
        return Turn(pieces, token_ids)


def _cycled(body: Turn, count: int) -> Turn:
    """`count` tokens of `body`, repeated as often as needed."""
    size = len(body.pieces)
    indices = [i % size for i in range(count)]
    return Turn([body.pieces[i] for i in indices], [body.token_ids[i] for i in indices])


def _joined(*turns: Turn) -> Turn:
    return Turn(
        [piece for turn in turns for piece in turn.pieces],
        [ids for turn in turns for ids in turn.token_ids],
    )


def answer_turn(tokenizer: Tokenizer, tokens: int, analysis_share: float = ANALYSIS_SHARE) -> Turn:
    """Analysis, then the final answer: `tokens` events in all."""
    head = tokenizer.turn("<|channel|>analysis<|message|>")
    switch = tokenizer.turn("<|end|><|start|>assistant" + FINAL_MARKER)
    body_tokens = max(2, tokens - len(head.pieces) - len(switch.pieces))
    analysis = max(1, round(body_tokens * analysis_share))
    return _joined(
        head,
        _cycled(tokenizer.turn(ANALYSIS), analysis),
        switch,
        _cycled(tokenizer.turn(FINAL), body_tokens - analysis),
    )


def tool_turn(tokenizer: Tokenizer) -> Turn:
    """Analysis, then a write_file call whose arguments (a whole source file) stream as JSON."""
    arguments = json.dumps({"path": "import_csv.py", "content": TOOL_CODE})
    return tokenizer.turn(
        f"<|channel|>analysis<|message|>{TOOL_ANALYSIS}<|end|><|start|>assistant"
        f"<|channel|>commentary to=functions.{TOOL_NAME} <|constrain|>json<|message|>{arguments}"
    )


def named_turn(tokenizer: Tokenizer, name: str) -> Turn:
    """`tool`, or `answer-N` (N events)."""
    return tool_turn(tokenizer) if name == "tool" else answer_turn(tokenizer, int(name[7:]))


def request_body(turn_name: str) -> dict[str, Any]:
    """The chat request a client sends for a turn (tools declared for the tool turn)."""
    body: dict[str, Any] = {
        "model": "gpt-oss-20b",
        "stream": True,
        "messages": [{"role": "user", "content": "My CSV import into Postgres is slow."}],
    }
    if turn_name.startswith("tool"):
        body["tools"] = TOOLS
    return body
