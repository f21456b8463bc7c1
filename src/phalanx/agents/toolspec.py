"""What a tool is: :class:`ToolSpec` (name, description, JSON schema, function), the
context it runs with, its result; :func:`tool`, which builds a spec from a typed function
(schema from the signature, descriptions from the docstring); and the validation of a
model's arguments against that schema (:func:`validate_arguments`).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, overload

from ..exceptions import UsageError
from ..providers.base import ToolDef
from .workspace import ToolError, Workspace

__all__ = [
    "NAMED_PARAMETERS",
    "ToolContext",
    "ToolResult",
    "ToolSpec",
    "tool",
    "validate_arguments",
]

NAMED_PARAMETERS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


_SCALARS: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (str, "string"),
    (int, "integer"),
    (float, "number"),
)


@dataclass(frozen=True, kw_only=True)
class ToolSpec:
    """A tool: what the model sees (name, description, JSON schema) and what runs.
    ``read_only``: the tool changes nothing (reading files, listing, searching), so running
    it twice is harmless: a call of it left in doubt by a crash is simply run again, and
    its start is not committed to the journal before it runs. Every other tool counts as
    one that writes (the default: a tool is assumed to have side effects)."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    func: Callable[..., Any]
    needs_context: bool = False
    read_only: bool = False

    def to_def(self) -> ToolDef:
        """The provider-neutral definition sent to a model."""
        return ToolDef(name=self.name, description=self.description, parameters=self.parameters)


@dataclass(frozen=True, kw_only=True)
class ToolContext:
    """What a tool may use during one run. ``command_timeout`` is run_command's default and
    its ceiling (a model may ask for less, never more); ``env`` is the environment commands
    start from (scrubbed; default ``os.environ``); ``max_output`` caps a result's text.
    ``agent`` is the name of the agent the tools run for; ``comms`` is the run's
    communication hub (a :class:`phalanx.comms.Comms`, ``None`` when messaging is off),
    read by the communication tools. ``sandbox`` is where commands run: ``"bwrap"``
    (bubblewrap, see :mod:`phalanx.agents.sandbox`; the network only with ``network``) or
    ``"none"``; ``cpu_seconds`` (default: the timeout) and ``memory_mb`` (0: no limit) cap
    each process of a command. ``env_pass``: the plan's ``env.pass``, variables a command
    gets even when the secret rule calls them secret."""

    workspace: Workspace
    allowed_commands: frozenset[str] = frozenset()
    command_timeout: float = 60.0
    sandbox: str = "bwrap"
    network: bool = False
    cpu_seconds: float | None = None
    memory_mb: int = 4096
    env: Mapping[str, str] | None = None
    env_pass: frozenset[str] = frozenset()
    max_output: int = 20_000
    agent: str = ""
    comms: Any = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolResult:
    """What a tool call gives back to the model. ``content`` is always text; on failure it
    reads ``"error: {code}: {message}"`` and ``error_code`` holds the code."""

    ok: bool
    content: str
    error_code: str | None = None


@overload
def tool(func: Callable[..., Any], /) -> ToolSpec: ...


@overload
def tool(
    *, name: str | None = None, description: str | None = None, read_only: bool = False
) -> Callable[[Callable[..., Any]], ToolSpec]: ...


def tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    read_only: bool = False,
) -> ToolSpec | Callable[[Callable[..., Any]], ToolSpec]:
    """Make a :class:`ToolSpec` from a typed function: ``@tool`` or ``@tool(name=...)``;
    ``@tool(read_only=True)`` for a tool that changes nothing (see :class:`ToolSpec`).

    Raises :class:`~phalanx.exceptions.UsageError` naming the function and parameter when a
    parameter has no annotation, an unsupported one, or is ``*args``/``**kwargs``/positional
    only.
    """

    def build(f: Callable[..., Any]) -> ToolSpec:
        spec = _build_spec(f, name=name, description=description)
        return dataclasses.replace(spec, read_only=True) if read_only else spec

    return build if func is None else build(func)


def _build_spec(func: Callable[..., Any], *, name: str | None, description: str | None) -> ToolSpec:
    label = getattr(func, "__qualname__", repr(func))
    tool_name = str(name or getattr(func, "__name__", ""))
    if not _TOOL_NAME.match(tool_name):
        raise UsageError(f"tool {label}: name {tool_name!r} must match [A-Za-z0-9_-]{{1,64}}")
    params = list(inspect.signature(func).parameters.values())
    hints = _type_hints(func, label)
    needs_context = bool(params) and hints.get(params[0].name) is ToolContext
    if needs_context:
        params = params[1:]
    summary, docs = _parse_doc(inspect.getdoc(func) or "", {p.name for p in params})
    parameters = _object_schema(params, hints, docs, label)
    return ToolSpec(
        name=tool_name,
        description=description if description is not None else summary,
        parameters=parameters,
        func=func,
        needs_context=needs_context,
    )


def _type_hints(func: Callable[..., Any], label: str) -> dict[str, Any]:
    try:
        return get_type_hints(func)
    except Exception as exc:
        raise UsageError(f"tool {label}: cannot resolve its type annotations ({exc})") from None


def _object_schema(
    params: Sequence[inspect.Parameter],
    hints: Mapping[str, Any],
    docs: Mapping[str, str],
    label: str,
) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for p in params:
        where = f"tool {label}: parameter {p.name!r}"
        if p.kind not in NAMED_PARAMETERS:
            raise UsageError(f"{where}: *args, **kwargs and positional-only are not supported")
        if p.name not in hints:
            raise UsageError(f"{where}: needs a type annotation")
        schema, optional = _param_schema(hints[p.name], where)
        if p.name in docs:
            schema["description"] = docs[p.name]
        if p.default is not p.empty:
            if p.default is not None and _json_scalar(p.default):
                schema["default"] = p.default
        elif not optional:
            required.append(p.name)
        properties[p.name] = schema
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _json_scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


def _param_schema(annotation: Any, where: str) -> tuple[dict[str, Any], bool]:
    """``(schema, optional)`` for one annotation; ``X | None`` is optional."""
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) == len(get_args(annotation)) - 1 and len(rest) == 1:
            return _plain_schema(rest[0], where), True
        raise UsageError(f"{where}: unions other than X | None are not supported")
    return _plain_schema(annotation, where), False


def _plain_schema(annotation: Any, where: str) -> dict[str, Any]:
    scalar = _scalar_type(annotation)
    if scalar is not None:
        return {"type": scalar}
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list and len(args) == 1 and _scalar_type(args[0]) is not None:
        return {"type": "array", "items": {"type": _scalar_type(args[0])}}
    if origin is Literal and args and all(isinstance(a, str) for a in args):
        return {"type": "string", "enum": list(args)}
    if origin is Literal and args and all(type(a) is int for a in args):
        return {"type": "integer", "enum": list(args)}
    raise UsageError(
        f"{where}: unsupported annotation {annotation!r} (use str, int, float, bool, "
        "list[...] of those, Literal[...], or X | None)"
    )


def _scalar_type(annotation: Any) -> str | None:
    for typ, json_type in _SCALARS:
        if annotation is typ:
            return json_type
    return None


_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns?|Raises|Yields|Examples?|Notes?):$")


_REST_PARAM = re.compile(r"^:param\s+(?:\w+\s+)?(\w+):\s*(.*)$")


_GOOGLE_ARG = re.compile(r"^(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _parse_doc(doc: str, names: set[str]) -> tuple[str, dict[str, str]]:
    """The description (text before any section) and each parameter's description, from a
    Google-style ``Args:`` section or reST ``:param name:`` lines."""
    description: list[str] = []
    docs: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    for line in doc.splitlines():
        text = line.strip()
        header = _SECTION.match(text)
        rest = _REST_PARAM.match(text)
        if header and line == text:
            section, current = header.group(1), None
        elif rest and rest.group(1) in names:
            section, current = "rest", rest.group(1)
            docs[current] = rest.group(2)
        elif section is None:
            description.append(line)
        elif section in ("Args", "Arguments", "Parameters", "rest"):
            current = _doc_arg(text, names, docs, current)
    return "\n".join(description).strip(), {k: " ".join(v.split()) for k, v in docs.items()}


def _doc_arg(text: str, names: set[str], docs: dict[str, str], current: str | None) -> str | None:
    match = _GOOGLE_ARG.match(text)
    if match and match.group(1) in names:
        docs[match.group(1)] = match.group(2)
        return match.group(1)
    if current is not None and text:
        docs[current] += " " + text
    return current


def validate_arguments(schema: Mapping[str, Any], arguments: object) -> dict[str, Any]:
    """Check the model's ``arguments`` against an object schema; return keyword arguments.

    Unknown keys (when ``additionalProperties`` is false), missing required keys and wrong
    types raise ``ToolError("bad_arguments")``. ``null`` for a key that is not required
    means "use the default". Integral floats pass for integers; ints pass for numbers.
    """
    if not isinstance(arguments, Mapping):
        raise ToolError("bad_arguments", "arguments must be a JSON object")
    properties: Mapping[str, Any] = schema.get("properties", {})
    required: Sequence[str] = schema.get("required", [])
    closed = schema.get("additionalProperties", True) is False
    out: dict[str, Any] = {}
    for key, value in arguments.items():
        if not isinstance(key, str) or (closed and key not in properties):
            raise ToolError("bad_arguments", f"unknown argument {key!r}")
        if value is None and key not in required:
            continue
        out[key] = _check_value(value, properties.get(key, {}), key)
    missing = [k for k in required if k not in out]
    if missing:
        raise ToolError("bad_arguments", f"missing required argument(s): {', '.join(missing)}")
    return out


def _check_value(value: object, schema: Mapping[str, Any], where: str) -> Any:
    enum = schema.get("enum")
    if enum is not None and value not in enum:
        raise ToolError("bad_arguments", f"argument {where!r}: must be one of {enum}")
    declared = schema.get("type")
    if declared is None:
        return value
    for json_type in [declared] if isinstance(declared, str) else declared:
        ok, converted = _convert(value, json_type, schema, where)
        if ok:
            return converted
    raise ToolError(
        "bad_arguments", f"argument {where!r}: expected {declared}, got {_json_name(value)}"
    )


def _convert(
    value: object, json_type: str, schema: Mapping[str, Any], where: str
) -> tuple[bool, Any]:
    if json_type == "string":
        return isinstance(value, str), value
    if json_type == "boolean":
        return isinstance(value, bool), value
    if isinstance(value, bool):
        return False, value
    if json_type == "integer":
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        return isinstance(value, int), value
    if json_type == "number":
        ok = isinstance(value, int | float) and (isinstance(value, int) or math.isfinite(value))
        return ok, value
    if json_type == "array" and isinstance(value, list | tuple):
        items = schema.get("items", {})
        return True, [_check_value(v, items, f"{where}[{i}]") for i, v in enumerate(value)]
    if json_type == "object":
        return isinstance(value, Mapping), value
    return json_type == "null" and value is None, value


def _json_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list | tuple) else type(value).__name__
