"""Response repairs that need the request: tool names and arguments checked against the declared
tools, calls nobody may make, JSON answers that are really calls, mandatory-tool clients, XML-tool
clients, and the client's own stop strings.

A `Repairer` sits between the decoded events and the encoder. It holds back only what it must
decide on whole: a tool call until it ends, a content answer that may turn into a call. Nothing
is invented: a name that matches no declared tool, or arguments that are not a JSON object, are
shown to the client as text instead of becoming a broken call.
"""

import json
import re
from dataclasses import dataclass
from typing import Any

from ..events import Content
from ..events import Event
from ..events import Reasoning
from ..events import ToolCallArgs
from ..events import ToolCallBegin
from ..events import ToolCallEnd
from .clients import system_prompt

HELD_ANSWER_LIMIT = 64 * 1024
"""A content answer held back to see if it is a JSON tool call is let go past this size."""

MANDATORY_TOOL_CLIENTS = ("cline", "roo", "kilo")
COMPLETION_TOOLS = (("attempt_completion", "result"), ("plan_mode_respond", "response"))
_XML_TOOL_PROMPT = re.compile(
    r"<(attempt_completion|read_file|execute_command|write_to_file|ask_followup_question)>"
)
_FORMAT_SUFFIXES = ("json", "code")
_FENCE = re.compile(r"\A\s*```(?:json)?\s*\n?(.*?)\n?```\s*\Z", re.DOTALL)


@dataclass(frozen=True, slots=True)
class RequestView:
    """What the response repairs need to know of the client's request."""

    tools: dict[str, dict[str, Any]] | None = None
    """Declared function names -> their JSON-schema parameters; None when unknown (then
    names are only cleaned, not matched)."""
    calls_allowed: bool = True
    """False when the client sent no tools or `tool_choice: "none"`."""
    xml_tools: bool = False
    """No native tools, but the system prompt defines Cline/Roo-style XML tools."""
    completion_tool: tuple[str, str] | None = None
    """(tool, argument) that a plain answer is wrapped in, for mandatory-tool clients."""
    stops: tuple[str, ...] = ()
    """The client's stop strings, enforced here instead of upstream."""


def request_view(
    body: dict[str, Any],
    client: str,
    wrap_completion: bool = True,
    calls_forbidden: bool = False,
    stops: tuple[str, ...] = (),
) -> RequestView:
    """Read a chat request (as the client sent it) into a RequestView."""
    tools: dict[str, dict[str, Any]] = {}
    declared = body.get("tools")
    for tool in declared if isinstance(declared, list) else ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            parameters = function.get("parameters")
            tools[function["name"]] = parameters if isinstance(parameters, dict) else {}
    completion_tool = None
    if wrap_completion and client in MANDATORY_TOOL_CLIENTS:
        completion_tool = next((pair for pair in COMPLETION_TOOLS if pair[0] in tools), None)
    return RequestView(
        tools=tools,
        calls_allowed=bool(tools) and not calls_forbidden,
        xml_tools=not tools and bool(_XML_TOOL_PROMPT.search(system_prompt(body))),
        completion_tool=completion_tool,
        stops=stops,
    )


# -- tool names and arguments ---------------------------------------------------------------


def _name_key(name: str) -> str:
    return re.sub(r"[-_\s]", "", name).lower()


def repair_tool_name(name: str, declared: dict[str, Any]) -> str | None:
    """The declared tool a model-written name means, or None. Strips `functions.`, anything
    from a leaked `<|…` on, and a format word glued to the name (`shelljson`); matches case,
    `-`/`_` and space variants only when exactly one tool fits."""
    name = name.split("<|", 1)[0].strip().removeprefix("functions.").strip()
    if name in declared:
        return name
    candidates = [name] + [
        name[: -len(suffix)] for suffix in _FORMAT_SUFFIXES if name.endswith(suffix)
    ]
    for candidate in candidates:
        if candidate in declared:
            return candidate
        matches = [tool for tool in declared if _name_key(tool) == _name_key(candidate)]
        if len(matches) == 1:
            return matches[0]
    return None


def repair_arguments(text: str, tool: str) -> str | None:
    """Arguments as a compact JSON object string, or None when they are not one. Unwraps
    `[{…}]` and `{"name": tool, "arguments"|"parameters": {…}}`; empty means `{}`."""
    if not text.strip():
        return "{}"
    try:
        value = json.loads(text)
    except ValueError:
        return None
    value = _unwrap_call(value, tool)
    if not isinstance(value, dict):
        return None
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _unwrap_call(value: Any, tool: str | None) -> Any:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict) and set(value) in ({"name", "arguments"}, {"name", "parameters"}):
        if tool is None or value["name"] == tool:
            inner = value.get("arguments", value.get("parameters"))
            if isinstance(inner, str):
                try:
                    inner = json.loads(inner)
                except ValueError:
                    return value
            return inner
    return value


def fits_tool(arguments: dict[str, Any], schema: dict[str, Any]) -> bool:
    """Only declared properties, and every required one."""
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not arguments:
        return False
    required = schema.get("required")
    required = required if isinstance(required, list) else []
    return set(arguments) <= set(properties) and set(required) <= set(arguments)


def answer_as_call(text: str, tools: dict[str, dict[str, Any]]) -> tuple[str, str] | None:
    """A final answer that is one JSON object fitting exactly one declared tool (optionally
    fenced, `[…]`-wrapped, or `{"name", "parameters"}`-wrapped) -> (tool, arguments)."""
    fenced = _FENCE.match(text)
    try:
        value = json.loads(fenced.group(1) if fenced else text)
    except ValueError:
        return None
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        name = repair_tool_name(value["name"], tools)
        unwrapped = _unwrap_call(value, value["name"])
        if name and isinstance(unwrapped, dict) and unwrapped is not value:
            return name, json.dumps(unwrapped, ensure_ascii=False, separators=(",", ":"))
    if not isinstance(value, dict):
        return None
    fitting = [name for name, schema in tools.items() if fits_tool(value, schema)]
    if len(fitting) != 1:
        return None
    return fitting[0], json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def render_call_text(name: str, arguments: str) -> str:
    """A call shown to a person, as text."""
    return f"\n\n**Tool call:** `{name}`\n```json\n{arguments}\n```\n"


def render_xml_call(name: str, arguments: str) -> str:
    """A call in Cline/Roo's XML tool syntax: `<name>\\n<param>value</param>\\n</name>`."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        value = None
    if not isinstance(value, dict):
        return f"<{name}>\n{arguments}\n</{name}>"
    return f"<{name}>\n{_xml_children(value)}</{name}>"


def _xml_children(value: dict[str, Any]) -> str:
    return "".join(f"<{key}>{_xml_value(item)}</{key}>\n" for key, item in value.items())


def _xml_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "\n" + _xml_children(value)
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return "\n" + "".join(_xml_children(item) for item in value)
    return json.dumps(value, ensure_ascii=False)


# -- the streaming repairer -----------------------------------------------------------------


class Repairer:
    """Repair one choice's events against the request. Feed events, then `close()`."""

    def __init__(self, view: RequestView) -> None:
        self.view = view
        self.repairs: list[str] = []
        self.stopped = False
        """A client stop string was reached: the answer ends there (finish_reason stop)."""
        self._call: tuple[str, str | None] | None = None  # (raw name, upstream id) being held
        self._args: list[str] = []
        self._said = False  # content or a call reached the client
        self._calls = 0
        self._dropped: list[str] = []  # calls nobody may make, as text, for an empty answer
        self._held: list[str] | None = None  # content held for a JSON-call or completion check
        self._held_size = 0
        self._head_known = False  # the held answer's start says it may be JSON
        self._stop_tail = ""  # content held because it may start a stop string
        self._hold_all = view.completion_tool is not None and view.calls_allowed

    def feed(self, events: list[Event]) -> list[Event]:
        out: list[Event] = []
        for event in events:
            if self.stopped:
                break
            match event:
                case ToolCallBegin(name, call_id):
                    self._call, self._args = (name, call_id), []
                case ToolCallArgs(text):
                    if self._call is not None:
                        self._args.append(text)
                case ToolCallEnd():
                    if self._call is not None:
                        self._end_call(out)
                case Content(text):
                    self._content(text, out)
                case _:
                    out.append(event)
        return out

    def passes_unchanged(self, kind: type[Content] | type[Reasoning]) -> bool:
        """An event of this kind would go through as it is, changing nothing here: reasoning
        until a stop string ends the answer; content once the answer flows (not held back for a
        call check, already said, no stop strings to look for)."""
        if self.stopped:
            return False
        return kind is not Content or (self._held is None and self._said and not self.view.stops)

    def close(self) -> list[Event]:
        out: list[Event] = []
        if self._call is not None:
            self._end_call(out)
        held = "".join(self._held) if self._held is not None else ""
        self._held = None
        if held:
            self._finish_held(held, out)
        if self._stop_tail:
            out.append(Content(self._stop_tail))
            self._said, self._stop_tail = True, ""
        if not self._said and self._dropped:
            self._repair("withheld-call-as-text")
            out.append(Content("".join(self._dropped).lstrip()))
        return out

    # -- calls

    def _end_call(self, out: list[Event]) -> None:
        assert self._call is not None
        raw_name, call_id = self._call
        raw_args = "".join(self._args)
        self._call, self._args = None, []
        view = self.view
        if view.xml_tools:
            self._repair("call-rendered-as-xml")
            self._emit_content(render_xml_call(_clean_name(raw_name), raw_args), out)
            return
        if not view.calls_allowed:
            self._repair("withheld-call-dropped")
            self._dropped.append(render_call_text(_clean_name(raw_name), raw_args))
            return
        name = (
            _clean_name(raw_name) if view.tools is None else repair_tool_name(raw_name, view.tools)
        )
        arguments = repair_arguments(raw_args, name) if name else None
        if name is None or arguments is None:
            self._repair("unknown-tool-as-text" if name is None else "bad-arguments-as-text")
            self._emit_content(render_call_text(_clean_name(raw_name), raw_args), out)
            return
        if name != raw_name:
            self._repair("tool-name-repaired")
        if arguments != raw_args and arguments != "{}":
            self._repair("arguments-normalised")
        self._flush_held(out)
        self._calls += 1
        self._said = True
        out += [ToolCallBegin(name, call_id), ToolCallArgs(arguments), ToolCallEnd()]

    # -- content

    def _content(self, text: str, out: list[Event]) -> None:
        if self._held is None and not self._said and self._may_hold(text):
            self._held, self._held_size, self._head_known = [], 0, self._hold_all
        if self._held is None:
            self._emit_content(text, out)
            return
        self._held.append(text)
        self._held_size += len(text)
        if not self._head_known:
            head = "".join(self._held).lstrip()
            if head.startswith(("{", "[", "```json")):
                self._head_known = True
            elif not "```json".startswith(head):
                self._flush_held(out)  # not JSON after all: let the answer flow
                return
        if self._held_size > HELD_ANSWER_LIMIT:
            self._flush_held(out)

    def _may_hold(self, text: str) -> bool:
        """Hold an answer that may be a JSON call (tools declared, starts like JSON), or every
        answer of a mandatory-tool client (it may have to become attempt_completion)."""
        if self._hold_all:
            return True
        view = self.view
        return bool(view.calls_allowed and view.tools and text.lstrip()[:1] in ("{", "[", "`"))

    def _flush_held(self, out: list[Event]) -> None:
        if self._held is None:
            return
        held, self._held = "".join(self._held), None
        self._hold_all = False
        if held:
            self._emit_content(held, out)

    def _finish_held(self, held: str, out: list[Event]) -> None:
        """End of the answer with content held back: a call after all, or the answer."""
        view = self.view
        if self._calls == 0 and view.calls_allowed and view.tools:
            call = answer_as_call(held, view.tools)
            if call:
                self._repair("json-answer-as-call")
                out += [ToolCallBegin(call[0]), ToolCallArgs(call[1]), ToolCallEnd()]
                self._said = True
                return
            if view.completion_tool and held.strip():
                tool, argument = view.completion_tool
                self._repair(f"answer-wrapped-in-{tool}")
                arguments = json.dumps({argument: held.strip()}, ensure_ascii=False)
                out += [ToolCallBegin(tool), ToolCallArgs(arguments), ToolCallEnd()]
                self._said = True
                return
        self._emit_content(held, out)

    def _emit_content(self, text: str, out: list[Event]) -> None:
        stops = self.view.stops
        if stops:
            text = self._stop_tail + text
            cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
            if cut >= 0:
                self._repair("client-stop-applied")
                self.stopped = True
                text, self._stop_tail = text[:cut], ""
            else:
                keep = _longest_stop_prefix_suffix(text, stops)
                text, self._stop_tail = text[: len(text) - keep], text[len(text) - keep :]
        if text:
            self._said = True
            out.append(Content(text))

    def _repair(self, name: str) -> None:
        if name not in self.repairs:
            self.repairs.append(name)


def _clean_name(name: str) -> str:
    return name.split("<|", 1)[0].strip().removeprefix("functions.") or "unnamed"


def _longest_stop_prefix_suffix(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of `text` could be the start of a stop string."""
    best = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), best, -1):
            if stop.startswith(text[-size:]):
                best = size
                break
    return best
