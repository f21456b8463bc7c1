"""What a tool is: :class:`ToolSpec` (name, description, JSON schema, function), the
context it runs with, its result; :func:`tool`, which builds a spec from a typed function
(schema from the signature, descriptions from the docstring); and the validation of a
model's arguments against that schema (:func:`validate_arguments`).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
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
    one that writes (the default: a tool is assumed to have side effects). ``origin``:
    where a tool that is not a Python function comes from (``mcp:SERVER/TOOL`` for a tool
    of an MCP server), what a plan's tool patterns match; empty for the others."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    func: Callable[..., Any]
    needs_context: bool = False
    read_only: bool = False
    origin: str = ""

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
    """Check the model's ``arguments`` against the tool's JSON Schema (all of it: nested
    objects, arrays, enums, required keys, ``$ref`` pointers; draft 2020-12 unless the schema
    names its own); return the keyword arguments.

    A problem raises ``ToolError("bad_arguments")`` naming its path (``$.where.depth``).
    ``null`` for a key that is not required means "use the default" (the key is dropped).
    Integral floats pass for integers (and become ints); ints pass for numbers; booleans
    are neither; NaN and infinities are refused.
    """
    if not isinstance(arguments, Mapping):
        raise ToolError("bad_arguments", "arguments must be a JSON object")
    required = set(schema.get("required", ()))
    out: dict[str, Any] = {}
    for key, value in arguments.items():
        if not isinstance(key, str):
            raise ToolError("bad_arguments", f"argument names must be strings, got {key!r}")
        if value is None and key not in required:
            continue
        out[key] = value
    bad = _non_finite(out, "$")
    if bad is not None:
        raise ToolError("bad_arguments", f"argument {bad}: NaN and infinities are not numbers")
    error = _first_error(schema, out)
    if error is not None:
        raise ToolError("bad_arguments", error)
    converted: dict[str, Any] = _ints(out, schema)
    return converted


def _first_error(schema: Mapping[str, Any], value: object) -> str | None:
    """The most relevant schema violation of ``value``, as one line with its path."""
    from jsonschema import exceptions

    error = exceptions.best_match(_validator(schema).iter_errors(value))
    if error is None:
        return None
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        known = set(error.schema.get("properties", {})) if isinstance(error.schema, dict) else set()
        extra = sorted(str(k) for k in error.instance if k not in known)
        if extra:
            return f"unknown argument {'.'.join([error.json_path, extra[0]])}"
    if error.validator == "required":
        return f"missing required argument at {error.json_path}: {error.message}"
    return f"argument {error.json_path}: {error.message}"


_VALIDATORS: dict[str, Any] = {}


def _validator(schema: Mapping[str, Any]) -> Any:
    """A jsonschema validator for ``schema`` (cached by the schema's JSON text)."""
    from jsonschema import exceptions, validators

    key = json.dumps(schema, sort_keys=True, default=str)
    found = _VALIDATORS.get(key)
    if found is None:
        cls = validators.validator_for(schema, default=validators.Draft202012Validator)
        try:
            cls.check_schema(dict(schema))
        except exceptions.SchemaError as err:
            message = f"the tool's JSON Schema is invalid: {err.message}"
            raise ToolError("bad_schema", message) from None
        found = _VALIDATORS.setdefault(key, cls(dict(schema)))
        if len(_VALIDATORS) > 4096:  # tool schemas are few; a leak of generated ones is not
            _VALIDATORS.clear()
    return found


def _non_finite(value: object, where: str) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return where
    items: Any = ()
    if isinstance(value, Mapping):
        items = ((f"{where}.{k}", v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    for path, item in items:
        found = _non_finite(item, path)
        if found is not None:
            return found
    return None


def _ints(value: Any, schema: Any, root: Any = None) -> Any:
    """``value`` with integral floats made ints where ``schema`` says integer (it passed
    validation, so such floats are integral), walking properties, array items and local
    references (``#/$defs/...``)."""
    root = schema if root is None else root
    schema = _deref(schema, root)
    if not isinstance(schema, Mapping):
        return value
    declared = schema.get("type")
    if isinstance(value, float) and (
        declared == "integer" or (isinstance(declared, list) and "integer" in declared)
    ):
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping) and isinstance(schema.get("properties"), Mapping):
        props = schema["properties"]
        return {k: _ints(v, props.get(k), root) for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_ints(v, schema["items"], root) for v in value]
    return value


def _deref(schema: Any, root: Any) -> Any:
    for _ in range(32):  # a chain of references, not a loop of them
        ref = schema.get("$ref") if isinstance(schema, Mapping) else None
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return schema
        node = root
        for part in ref[2:].split("/"):
            node = node.get(part) if isinstance(node, Mapping) else None
        schema = node
    return schema
