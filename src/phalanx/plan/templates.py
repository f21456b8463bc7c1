"""Plan templates: ``phalanx init --template NAME [DIR]`` writes an editable ``plan.yaml``.

Each template is the strategy's pattern as an ordinary, commented plan file:

- ``feature``: the feature-development case study: designer (yaml), implementer
  (concise), validator (table and html reports): 3 agents, 7 tasks.
- ``migration``: the codebase-migration case study: analyzer, planner, migrators, testers,
  documenter; the analyzer picks the files of a target directory at run time and the plan
  grows one ``migrate[i]`` and one ``test[i]`` task per file it named (``foreach``); its
  prompt lists the files found at init (hidden and binary files skipped, at most
  :data:`MAX_FILES`).
- ``research``: a planner picks the sub-questions at run time, researchers take them in
  parallel (``foreach``), then a synthesiser.
- ``swarm``: N like agents, named, the work items (lines of a text file or files of a
  directory) assigned round-robin with ``agent:`` (idle agents still steal).
- ``pipeline``: analyze (yaml) -> design (html) -> implement (concise) -> test (table) ->
  deploy (tts), one agent per stage.

Every template names a real default model (``provider:``) and sets ``providers.sim`` to
realistic simulated latencies, so ``phalanx run plan.yaml --provider sim`` shows the shape
of a run without a model.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import yaml

from ..exceptions import UsageError
from .catalog import BUILDERS
from .inputs import (
    MAX_FILES,
    MAX_LINES,
    PLAN_FILE,
    TemplateOptions,
    TemplateSpec,
    list_files,
    read_lines,
    task_slug,
)

__all__ = [
    "MAX_FILES",
    "MAX_LINES",
    "PLAN_FILE",
    "TEMPLATES",
    "init_template",
    "list_files",
    "read_lines",
    "render_template",
    "task_slug",
]

TEMPLATES: dict[str, str] = {
    "feature": "feature development: designer (yaml), implementer (concise), validator "
    "(table/html); 3 agents",
    "migration": "codebase migration: analyzer, planner, migrators, testers, documenter; "
    "one migrate and one test task per file the analyzer picks from --target DIR",
    "research": "a planner picks the sub-questions, researchers take them in parallel, then a "
    "synthesiser (--inputs FILE: suggested sub-questions, one per line)",
    "swarm": "N like agents, work items round-robin (--inputs FILE_OR_DIR: lines of a text "
    "file or files of a directory)",
    "pipeline": "analyze (yaml) -> design (html) -> implement (concise) -> test (table) -> "
    "deploy (tts)",
}

SIM_LATENCY: dict[str, Any] = {"distribution": "lognormal", "median_ms": 300, "sigma": 0.3}
_WIDTH = 92


# -- public API ---------------------------------------------------------------------------
def render_template(
    name: str,
    *,
    target: Path | None = None,
    inputs: Path | None = None,
    agents: int = 4,
    provider: str = "local:smollm2",
    plan_dir: Path | None = None,
) -> str:
    """The plan file of template ``name`` as commented YAML.

    ``target``: the directory a ``migration`` works on; ``inputs``: a text file (one item
    per line) or a directory (one item per file) for ``swarm`` and ``research``;
    ``agents``: how many agents of the template's scalable role (migrators and testers,
    researchers, swarm workers; ``feature`` and ``pipeline`` have fixed teams);
    ``provider``: the default ``provider:model``; ``plan_dir``: where the plan will be
    written (paths in it are made relative to it, and its plan file is not an input).
    """
    builder = BUILDERS.get(name)
    if builder is None:
        raise UsageError(f"unknown template {name!r} (choose from {', '.join(TEMPLATES)})")
    if agents < 1:
        raise UsageError(f"--agents must be at least 1, got {agents}")
    _check_options(name, target, inputs)
    opts = TemplateOptions(target=target, inputs=inputs, agents=agents, plan_dir=plan_dir)
    return _render(builder(opts), name, provider)


def init_template(name: str, directory: Path, **opts: Any) -> Path:
    """Write template ``name`` to ``directory/plan.yaml`` (the directory is created) and
    return its path. An existing file is never overwritten. A ``migration`` without a
    ``target`` migrates ``directory`` itself."""
    directory = Path(directory)
    path = directory / PLAN_FILE
    if path.exists():
        raise UsageError(
            f"{path} already exists; not overwriting it (remove it or choose another DIR)"
        )
    if name == "migration" and opts.get("target") is None:
        opts["target"] = directory
    text = render_template(name, plan_dir=directory, **opts)
    _validate(text, str(path))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as fh:
            fh.write(text)
    except FileExistsError:
        raise UsageError(f"{path} already exists; not overwriting it") from None
    return path


# -- checks and inputs --------------------------------------------------------------------
def _check_options(name: str, target: Path | None, inputs: Path | None) -> None:
    if target is not None and name != "migration":
        raise UsageError(f"--target is for the migration template, not {name!r}")
    if inputs is not None and name not in ("swarm", "research"):
        raise UsageError(f"--inputs is for the swarm and research templates, not {name!r}")
    if name == "migration" and target is None:
        raise UsageError("the migration template needs a target directory (--target DIR)")


def _validate(text: str, source: str) -> None:
    """The generated text must be a valid plan (a failure here is a bug in a template)."""
    from .file import plan_from_data
    from .schema import PlanLoader

    plan_from_data(yaml.load(text, Loader=PlanLoader), source=source)


# -- writing commented YAML ---------------------------------------------------------------
def _comment(text: str, indent: int = 0) -> str:
    pad = " " * indent
    lines = textwrap.wrap(text, width=_WIDTH - indent - 2) or [""]
    return "".join(f"{pad}# {line}".rstrip() + "\n" for line in lines)


def _scalar(text: str) -> str:
    """One string as a YAML scalar on one line."""
    return yaml.dump(text, Dumper=_Dumper, width=10**6, allow_unicode=True).split("\n")[0]


class _Inline(dict[str, Any]):
    """A mapping written inline: ``latency: {distribution: lognormal, ...}``."""


class _Dumper(yaml.SafeDumper):
    """Block style, except lists of scalars and :class:`_Inline` mappings (inline)."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    scalars = all(isinstance(x, str | int | float | bool) for x in data)
    inline = scalars and sum(len(str(x)) + 2 for x in data) <= _WIDTH - 20
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=inline)


def _represent_inline(dumper: yaml.SafeDumper, data: _Inline) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(_Inline, _represent_inline)


def _dump(data: Any, indent: int = 0) -> str:
    """``data`` as YAML (see :class:`_Dumper`), every line indented by ``indent``."""
    text = yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=_WIDTH,
    )
    pad = " " * indent
    return "".join(pad + line if line.strip() else line for line in text.splitlines(True))


def _render(spec: TemplateSpec, template: str, provider: str) -> str:
    parts = [
        _header(spec, template),
        _dump({"name": spec.name, "description": spec.description}),
        "\n",
        _comment(
            "How ready tasks are given to free agents: best_fit matches role (4), "
            "category (2) and shared skills (1); or round_robin, least_loaded."
        ),
        _dump({"policy": "best_fit"}),
        "\n",
        _providers_section(provider),
    ]
    if spec.workspace is not None:
        parts += [
            "\n",
            _comment(
                "The agents' sandbox (relative to this file): their tools and "
                "context read files here and nowhere else."
            ),
            _dump({"workspace": spec.workspace}),
        ]
    if spec.limits is not None:
        parts += ["\n", _comment(spec.limits[0]), _dump({"limits": spec.limits[1]})]
    parts += ["\n", _agents_section(spec), "\n", _tasks_section(spec)]
    return "".join(parts)


def _header(spec: TemplateSpec, template: str) -> str:
    lines = [
        f"Generated by `phalanx init --template {template}`: an ordinary plan file, edit "
        "it freely (the plan format is in the README).",
        spec.about,
        *spec.notes,
    ]
    usage = (
        "#\n# Run it:       phalanx run plan.yaml\n"
        "# Simulated:    phalanx run plan.yaml --provider sim   (no model; sim latencies "
        "below)\n"
        "# Baseline:     phalanx run plan.yaml --sequential      (the same tasks on one "
        "agent)\n"
        "# Compare:      phalanx report PARALLEL_RUN_ID --baseline SEQUENTIAL_RUN_ID\n"
    )
    body = "#\n".join(_comment(line) for line in lines)
    return body + usage + "\n"


def _providers_section(provider: str) -> str:
    return (
        _comment(
            "The model of every agent that names none (an agent may set its own "
            "`provider:`). Switch with e.g. anthropic:claude-sonnet-4-5, "
            "openai:gpt-4o, openai-compatible:MODEL (with providers.openai-compatible."
            "base_url), claude-code; `--provider P` overrides every agent for one "
            "run."
        )
        + _dump({"provider": provider})
        + "\n"
        + _comment(
            "Provider settings. `sim` is the simulated provider used by --provider "
            "sim: seeded latencies like a real model's, no answers worth reading."
        )
        + _dump({"providers": {"sim": {"latency": _Inline(SIM_LATENCY), "output_tokens": 80}}})
    )


def _agents_section(spec: TemplateSpec) -> str:
    out = _comment(
        "Who does the work. role: a name from `phalanx roles` puts its description in the "
        "agent's prompt; style: the output format (yaml, json, concise, markdown, table, "
        "html, tts, ...); count: clones of the agent."
    )
    out += "agents:\n"
    for i, (note, agent) in enumerate(spec.agents):
        out += _comment(note, 2) + _dump([agent], 2)
        if spec.brief is not None:
            out += _brief(spec.brief, spec.brief_note, first=i == 0)
    return out


def _brief(brief: str, note: str, *, first: bool) -> str:
    """An agent's ``context:``: the brief (anchored) on the first agent, an alias after."""
    if not first:
        return "    context: *brief\n"
    note = _comment(note or "The brief, shared by every agent as context.", 4)
    return f"{note}    context: &brief\n      - {_scalar(brief)}\n"


def _tasks_section(spec: TemplateSpec) -> str:
    out = _comment(
        "What is done. needs: the tasks whose results this one receives (the DAG); "
        "category: research, architecture, implementation, testing, documentation or "
        "other; role: only agents of that role take it; style: overrides the agent's."
    )
    out += "tasks:\n"
    for note, group in spec.tasks:
        out += _comment(note, 2) + _dump(group, 2)
    return out
