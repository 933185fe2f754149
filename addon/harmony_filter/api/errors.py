"""Upstream errors: recover the model's text from tool-parse failures, and put every other
error into OpenAI's error format.

Groq answers a tool call it cannot parse with 400 `tool_use_failed` and the model's text in
`failed_generation`; Ollama with 500 `error parsing tool call: raw='…'`. That text is often a
perfectly good Harmony answer that our decoder and repairs can read.
"""

import json
import re
from typing import Any

_OLLAMA_RAW = re.compile(r"error parsing tool call: raw='(.*)', err=", re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
MESSAGE_LIMIT = 2000
"""Characters of a plain-text or HTML error page kept as the error's message."""


def failed_generation(body: bytes) -> str | None:
    """The model text an upstream tool-parse error carries, if any."""
    text = body.decode(errors="replace")
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    error = value.get("error") if isinstance(value, dict) else None
    if isinstance(error, dict):
        generation = error.get("failed_generation")
        if isinstance(generation, str) and generation.strip():
            return generation
        message = error.get("message")
        text = message if isinstance(message, str) else text
    match = _OLLAMA_RAW.search(text)
    return match.group(1) if match else None


def error_message(body: bytes, status: str = "an error") -> str | None:
    """The message of an error in a non-OpenAI shape (plain text, an HTML page, no body at all,
    `{"error parsing…": …}`); None when the body already is an OpenAI error. `status` names
    the error when the body says nothing."""
    try:
        value: Any = json.loads(body)
    except ValueError:
        text = body.decode(errors="replace").strip()
        if text.startswith("<"):  # a reverse proxy's error page: its words, not its markup
            text = " ".join(_TAG.sub(" ", text).split())
        return text[:MESSAGE_LIMIT] or f"the upstream answered {status} with no body"
    return json_error_message(value)


def json_error_message(value: Any) -> str | None:
    """`error_message` for a body already parsed as JSON."""
    if isinstance(value, dict):
        if isinstance(value.get("error"), dict):
            return None
        errors = [f"{key}: {item}" for key, item in value.items() if "error" in key.lower()]
        if errors:
            return "; ".join(errors)
    return json.dumps(value)


def openai_error(
    message: str, code: int | str | None = None, kind: str = "upstream_error"
) -> dict[str, Any]:
    """OpenAI's error body; `code` is the HTTP status or a name for the error."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
