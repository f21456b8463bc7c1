"""Plan templates: ``phalanx init --template NAME [DIR]`` writes an editable ``plan.yaml``.

Each template is the strategy's pattern as an ordinary, commented plan file:

- ``feature``: the feature-development case study: designer (yaml), implementer
  (concise), validator (table and html reports): 3 agents, 7 tasks.
- ``migration``: the codebase-migration case study: analyzer, planner, migrators, testers,
  documenter; one ``migrate-<slug>`` and one ``test-<slug>`` task per file of a target
  directory (hidden and binary files skipped, at most :data:`MAX_FILES`).
- ``research``: N researchers on sub-questions in parallel, then a synthesiser.
- ``swarm``: N like agents, named, the work items (lines of a text file or files of a
  directory) assigned round-robin with ``agent:`` (idle agents still steal).
- ``pipeline``: analyze (yaml) -> design (html) -> implement (concise) -> test (table) ->
  deploy (tts), one agent per stage.

Every template names a real default model (``provider:``) and sets ``providers.sim`` to
realistic simulated latencies, so ``phalanx run plan.yaml --provider sim`` shows the shape
of a run without a model.
"""

from __future__ import annotations

import hashlib
import os
import re
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ..agents.spec import AgentSpec, assign_names
from ..exceptions import UsageError

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
    "one migrate and one test task per file of --target DIR",
    "research": "N researchers on sub-questions in parallel, then a synthesiser "
    "(--inputs FILE: one sub-question per line)",
    "swarm": "N like agents, work items round-robin (--inputs FILE_OR_DIR: lines of a text "
    "file or files of a directory)",
    "pipeline": "analyze (yaml) -> design (html) -> implement (concise) -> test (table) -> "
    "deploy (tts)",
}

PLAN_FILE = "plan.yaml"
MAX_FILES = 500  # files of a directory (migration, swarm)
MAX_LINES = 5000  # lines of a text file (swarm, research)
SIM_LATENCY: dict[str, Any] = {"distribution": "lognormal", "median_ms": 300, "sigma": 0.3}
SKIP_DIRS = frozenset({"__pycache__", "node_modules"})
_SLUG_BAD = re.compile(r"[^A-Za-z0-9_.]+")
_SLUG_MAX = 100  # task ids are at most 128 characters: "migrate-" + slug
_WIDTH = 92


@dataclass(slots=True)
class _Spec:
    """A template's content before it is written out as commented YAML."""

    name: str
    description: str
    about: str  # the header paragraph
    agents: list[tuple[str, dict[str, Any]]]  # (comment, agent entry)
    tasks: list[tuple[str, list[dict[str, Any]]]]  # (comment, group of task entries)
    brief: str | None = None  # shared by every agent as context (YAML anchor &brief)
    brief_note: str = ""
    workspace: str | None = None
    notes: list[str] = field(default_factory=list)  # extra header lines


@dataclass(frozen=True, kw_only=True, slots=True)
class _Options:
    target: Path | None
    inputs: Path | None
    agents: int
    plan_dir: Path | None


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
    builder = _BUILDERS.get(name)
    if builder is None:
        raise UsageError(f"unknown template {name!r} (choose from {', '.join(TEMPLATES)})")
    if agents < 1:
        raise UsageError(f"--agents must be at least 1, got {agents}")
    _check_options(name, target, inputs)
    opts = _Options(target=target, inputs=inputs, agents=agents, plan_dir=plan_dir)
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


def task_slug(path: PurePosixPath | str) -> str:
    """A task-id-safe slug of a relative path: ``src/app/models.py`` -> ``src-app-models.py``
    (long ones are cut and end in a hash of the whole path)."""
    text = str(path)
    slug = _SLUG_BAD.sub("-", text).strip("-.") or "item"
    if len(slug) > _SLUG_MAX:
        digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
        slug = slug[: _SLUG_MAX - 9].rstrip("-.") + "-" + digest
    return slug


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


def _is_binary(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            chunk = fh.read(8192)
    except OSError:
        return True  # unreadable: not something an agent can work on either
    if b"\0" in chunk:
        return True
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(chunk) - 4  # a character cut at the chunk's end is fine
    return False


def _hidden(name: str) -> bool:
    return name.startswith(".")


def list_files(root: Path, *, exclude: Iterable[Path] = ()) -> list[PurePosixPath]:
    """Text files under ``root`` (relative, sorted): hidden files and directories, symlinks,
    ``__pycache__``/``node_modules`` and binary files are skipped; more than
    :data:`MAX_FILES` is a :class:`UsageError`."""
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    skip = {p.resolve() for p in exclude}
    out: list[PurePosixPath] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d) and d not in SKIP_DIRS)
        for fname in sorted(filenames):
            path = Path(dirpath) / fname
            if _hidden(fname) or path.is_symlink() or path.resolve() in skip:
                continue
            if _is_binary(path):
                continue
            out.append(PurePosixPath(path.relative_to(root).as_posix()))
            if len(out) > MAX_FILES:
                raise UsageError(
                    f"more than {MAX_FILES} files under {root}: point it at a smaller "
                    "directory (or split the work into several plans)"
                )
    if not out:
        raise UsageError(f"no text files under {root} (hidden and binary files are skipped)")
    return sorted(out)


def read_lines(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped (at most :data:`MAX_LINES`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"{path}: cannot read it as UTF-8 text ({exc.__class__.__name__})"
        ) from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise UsageError(f"{path}: no non-blank lines")
    if len(lines) > MAX_LINES:
        raise UsageError(f"{path}: more than {MAX_LINES} lines; split it into several plans")
    return lines


def _unique_slugs(paths: Sequence[PurePosixPath]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for p in paths:
        base = slug = task_slug(p)
        n = 2
        while slug in seen:
            slug, n = f"{base}-{n}", n + 1
        seen.add(slug)
        out.append(slug)
    return out


def _relative(path: Path, plan_dir: Path | None) -> str:
    """``path`` as the plan file should name it: relative to the plan's folder if given."""
    if plan_dir is None:
        return str(path.resolve())
    return Path(os.path.relpath(path.resolve(), plan_dir.resolve())).as_posix()


# -- the templates ------------------------------------------------------------------------
# (id, title, category, role, needs, style or None, prompt)
_FEATURE_TASKS: tuple[tuple[str, str, str, str, tuple[str, ...], str | None, str], ...] = (
    ("design-api", "design the API", "architecture", "designer", (), None,
     "Design the HTTP API of the feature: endpoints, payloads, errors."),
    ("design-data", "design the data model", "architecture", "designer", (), None,
     "Design the data model and storage the feature needs."),
    ("implement-api", "implement the API", "implementation", "implementer", ("design-api",),
     None, "Implement the API handlers as designed."),
    ("write-tests", "write the test plan", "testing", "validator", ("design-api",), "table",
     "Write the test plan for the API as a table: case, input, expected result."),
    ("implement-storage", "implement storage", "implementation", "implementer",
     ("design-data",), None, "Implement the storage layer for the data model."),
    ("document", "document the feature", "documentation", "designer",
     ("design-api", "design-data"), "markdown",
     "Write the user-facing documentation of the feature."),
    ("validate", "validate the feature", "testing", "validator",
     ("implement-api", "implement-storage", "write-tests"), None,
     "Check the implementation against the test plan; report the results."),
)  # fmt: skip


def _feature_task(
    row: tuple[str, str, str, str, tuple[str, ...], str | None, str],
) -> dict[str, Any]:
    tid, title, category, role, needs, style, prompt = row
    task: dict[str, Any] = {"id": tid, "title": title, "category": category, "role": role}
    if needs:
        task["needs"] = list(needs)
    if style is not None:
        task["style"] = style
    task["prompt"] = prompt
    return task


def _feature(opts: _Options) -> _Spec:
    tasks = {row[0]: _feature_task(row) for row in _FEATURE_TASKS}
    groups = (
        ("Design first: the implementer and the validator start from the designs.",
         ["design-api", "design-data"]),
        ("Then in parallel: code, a test plan written from the design, documentation.",
         ["implement-api", "write-tests", "implement-storage", "document"]),
        ("Last, the validation report over everything built (HTML, the validator's style).",
         ["validate"]),
    )  # fmt: skip
    return _Spec(
        name="feature-team",
        description="The strategy's feature-development case study on a sample feature.",
        about="The feature-development case study: a designer (YAML), an implementer "
        "(concise) and a validator (table and HTML reports) take one feature through a "
        "small DAG. Replace the sample feature (password reset) in the brief and prompts.",
        brief="Feature: password reset by e-mail for a web application's user accounts "
        "(single-use links that expire after 30 minutes).",
        brief_note="The feature, shared by every agent as context: edit it once here.",
        agents=[
            (
                "Designs the API and the data model; YAML keeps designs structured.",
                {"role": "designer", "style": "yaml", "skills": ["api-design"]},
            ),
            (
                "Writes the code, tersely.",
                {"role": "implementer", "style": "concise", "skills": ["coding"]},
            ),
            (
                "Tests: a test plan as a table, the validation report as HTML.",
                {"role": "validator", "style": "html", "skills": ["testing"]},
            ),
        ],
        tasks=[(note, [tasks[t] for t in ids]) for note, ids in groups],
    )


def _migration(opts: _Options) -> _Spec:
    assert opts.target is not None
    if not opts.target.is_dir():
        raise UsageError(
            f"the migration target {opts.target} is not a directory (give it with --target DIR)"
        )
    exclude = [opts.plan_dir / PLAN_FILE] if opts.plan_dir is not None else []
    files = list_files(opts.target, exclude=exclude)
    slugs = _unique_slugs(files)
    migrate, tests = _per_file_tasks(files, slugs)
    return _Spec(
        name="migration",
        description=f"Migrate the {len(files)} files under {opts.target.name or opts.target}.",
        about="The codebase-migration case study: an analyzer maps the code, a planner "
        "designs the path, migrators change one file each, testers verify each migrated "
        "file as soon as it is done (per-file tests, so testing overlaps migrating), and a "
        "documenter updates the docs once every test passed. The five roles are the case "
        "study's; migrators and testers are cloned (count) because per-file work is where "
        "the parallelism is: set count: 1 for the literal five-agent team.",
        brief="Migration goal (edit me): port the code to the current major version of "
        "its language and libraries, keeping behaviour unchanged.",
        brief_note="The goal, shared by every agent as context: edit it once here.",
        workspace=_relative(opts.target, opts.plan_dir),
        notes=[
            f"Generated from {len(files)} files of the target directory (hidden and "
            "binary files skipped); re-run `phalanx init` to regenerate after it changes.",
            "Agents only read files (read_file, list_files, search): add edit_file or "
            "write_file to an agent's tools to let it change them (with `isolation: "
            "worktree` each agent works on its own git branch).",
        ],
        agents=_migration_agents(opts.agents),
        tasks=_migration_tasks(files, migrate, tests),
    )


def _per_file_tasks(
    files: Sequence[PurePosixPath], slugs: Sequence[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One migrate task and one test task per file (tests follow their own file)."""
    migrate = [
        {
            "id": f"migrate-{s}",
            "title": f"migrate {f}",
            "category": "implementation",
            "role": "migrator",
            "needs": ["plan-migration"],
            "prompt": f"Migrate `{f}` following the migration plan. Read it first (read_file); "
            "answer with the changes to make.",
        }
        for f, s in zip(files, slugs, strict=True)
    ]
    tests = [
        {
            "id": f"test-{s}",
            "title": f"test {f}",
            "category": "testing",
            "role": "tester",
            "needs": [f"migrate-{s}"],
            "prompt": f"Verify the migration of `{f}`: list each check and its result.",
        }
        for f, s in zip(files, slugs, strict=True)
    ]
    return migrate, tests


def _migration_agents(n: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "Maps modules and dependencies.",
            {
                "role": "analyzer",
                "style": "yaml",
                "tools": ["list_files", "read_file", "search"],
            },
        ),
        (
            "Designs the migration path from the analysis.",
            {"role": "planner", "style": "markdown"},
        ),
        (
            "Execute the changes, one file per task.",
            {"role": "migrator", "count": n, "style": "concise", "tools": ["read_file"]},
        ),
        (
            "Verify each migrated file.",
            {"role": "tester", "count": n, "style": "table", "tools": ["read_file"]},
        ),
        ("Updates the documentation at the end.", {"role": "documenter", "style": "markdown"}),
    ]


def _migration_tasks(
    files: Sequence[PurePosixPath], migrate: list[dict[str, Any]], tests: list[dict[str, Any]]
) -> list[tuple[str, list[dict[str, Any]]]]:
    return [
        (
            "Analysis and plan: everything else builds on them.",
            [
                {
                    "id": "analyze",
                    "title": "map the code",
                    "category": "research",
                    "role": "analyzer",
                    "prompt": _analyze_prompt(files),
                },
                {
                    "id": "plan-migration",
                    "title": "design the migration path",
                    "category": "architecture",
                    "role": "planner",
                    "needs": ["analyze"],
                    "prompt": "Design the migration path from the analysis: the order of the "
                    "files, the risks, and the steps for each file.",
                },
            ],
        ),
        ("One migration task per file (they run in parallel on the migrators).", migrate),
        ("One test task per file, each as soon as its file is migrated.", tests),
        (
            "The documentation, once every file is migrated and tested.",
            [
                {
                    "id": "document",
                    "title": "update the docs",
                    "category": "documentation",
                    "role": "documenter",
                    "needs": [t["id"] for t in tests],
                    "prompt": "Update the documentation: what changed, module by module, and "
                    "what users of the code must do.",
                },
            ],
        ),
    ]


def _analyze_prompt(files: Sequence[PurePosixPath], shown: int = 60) -> str:
    listing = ", ".join(str(f) for f in files[:shown])
    more = f" and {len(files) - shown} more" if len(files) > shown else ""
    return (
        f"Map the {len(files)} files to migrate and their dependencies (what imports what, "
        f"what must change first): {listing}{more}."
    )


_ANGLES = (
    "the options that exist and how they compare",
    "operational cost, failure modes and how each option is run in production",
    "what teams that adopted each option report in practice",
    "security and compliance concerns",
    "the effort of moving from what we have today",
    "performance and scaling limits",
)


def _research(opts: _Options) -> _Spec:
    questions = (
        read_lines(opts.inputs)
        if opts.inputs is not None
        else [f"Research {_ANGLES[i % len(_ANGLES)]}." for i in range(opts.agents)]
    )
    width = len(str(len(questions)))
    ids = [f"research-{i + 1:0{width}d}" for i in range(len(questions))]
    return _Spec(
        name="research",
        description=f"{len(questions)} sub-questions researched in parallel, then synthesised.",
        about="Researchers take one sub-question each, in parallel; the synthesiser, which "
        "needs all of them, combines their findings into one answer. Edit the question in "
        "the brief and the sub-questions in the tasks (or pass --inputs FILE to `phalanx "
        "init`: one sub-question per line).",
        brief="Question (edit me): which background-job system should our Python web service use?",
        brief_note="The question, shared by every agent as context: edit it once here.",
        agents=[
            (
                "Researchers, in parallel; YAML keeps findings comparable.",
                {"role": "researcher", "count": opts.agents, "style": "yaml"},
            ),
            (
                "Combines every finding into one answer.",
                {"role": "synthesiser", "style": "markdown"},
            ),
        ],
        tasks=[
            (
                "One task per sub-question.",
                [
                    {
                        "id": tid,
                        "title": _title(q),
                        "category": "research",
                        "role": "researcher",
                        "prompt": q,
                    }
                    for tid, q in zip(ids, questions, strict=True)
                ],
            ),
            (
                "The synthesis needs every finding.",
                [
                    {
                        "id": "synthesise",
                        "title": "synthesise the findings",
                        "category": "documentation",
                        "role": "synthesiser",
                        "needs": ids,
                        "prompt": "Combine the findings into one answer to the question: the "
                        "recommendation, the reasons, and what is still uncertain.",
                    },
                ],
            ),
        ],
    )


def _swarm(opts: _Options) -> _Spec:
    names = _worker_names(opts.agents)
    items, workspace, what = _swarm_items(opts)
    width = len(str(len(items)))
    tasks = [
        {
            "id": f"item-{i + 1:0{width}d}",
            "title": _title(title),
            "category": "other",
            "agent": names[i % len(names)],
            "prompt": prompt,
        }
        for i, (title, prompt) in enumerate(items)
    ]
    return _Spec(
        name="swarm",
        description=f"{len(items)} work items over {len(names)} like agents.",
        about="A swarm: like agents share a batch of work items, dealt round-robin (each "
        "task names its agent); an agent that runs out of work steals from the busiest "
        f"queue. The items are {what}.",
        workspace=workspace,
        agents=[
            (
                "Like agents with explicit names (the tasks refer to them).",
                {
                    "role": "worker",
                    "count": len(names),
                    "names": names,
                    "style": "concise",
                    **({"tools": ["read_file"]} if workspace is not None else {}),
                },
            ),
        ],
        tasks=[("One task per work item, agents assigned round-robin.", tasks)],
    )


def _worker_names(n: int) -> list[str]:
    """``n`` memorable names, as a run would give them (Cipher, Nova, ...)."""
    return [a.name or "" for a in assign_names(AgentSpec(role="worker").clone(n))]


def _swarm_items(opts: _Options) -> tuple[list[tuple[str, str]], str | None, str]:
    """(title, prompt) per work item, the workspace (for files), and what the items are."""
    src = opts.inputs
    if src is None:
        n = 2 * opts.agents
        items = [
            (f"item {i + 1}", f"Work item {i + 1} (edit me): describe the work here.")
            for i in range(n)
        ]
        return items, None, "placeholders: pass --inputs FILE_OR_DIR to `phalanx init`"
    if src.is_dir():
        exclude = [opts.plan_dir / PLAN_FILE] if opts.plan_dir is not None else []
        files = list_files(src, exclude=exclude)
        items = [
            (
                str(f),
                f"Review `{f}` (read_file) and summarise what it does and any problem you see.",
            )
            for f in files
        ]
        return items, _relative(src, opts.plan_dir), f"the files under {src}"
    lines = read_lines(src)
    return [(line, line) for line in lines], None, f"the lines of {src} (each line is a prompt)"


_STAGES = (
    (
        "analyze",
        "analyzer",
        "yaml",
        "research",
        "Analyze the requirements: users, constraints, risks.",
    ),
    (
        "design",
        "architect",
        "html",
        "architecture",
        "Design the system: components, interfaces, data.",
    ),
    ("implement", "coder", "concise", "implementation", "Implement the design."),
    ("test", "tester", "table", "testing", "Test the implementation: case, expected, result."),
    (
        "deploy",
        "deployer",
        "tts",
        "other",
        "Say how it is deployed and rolled out, as a short spoken briefing.",
    ),
)


def _pipeline(opts: _Options) -> _Spec:
    tasks = [
        {
            "id": stage,
            "title": stage,
            "category": category,
            "role": role,
            **({"needs": [_STAGES[i - 1][0]]} if i else {}),
            "prompt": prompt,
        }
        for i, (stage, role, _, category, prompt) in enumerate(_STAGES)
    ]
    return _Spec(
        name="pipeline",
        description="Five stages, each handing its result to the next.",
        about="The strategy's AgentPipeline: analyze -> design -> implement -> test -> "
        "deploy, one specialised agent per stage, each stage receiving the results before "
        "it. A chain has no parallelism of its own (its speedup over --sequential is 1x): "
        "it buys specialisation; add tasks beside a stage to run them in parallel.",
        brief="The work (edit me): a URL-shortening web service with click statistics.",
        brief_note="What the pipeline builds, shared by every agent as context.",
        agents=[
            (f"Stage {stage}: {style} output.", {"role": role, "style": style})
            for stage, role, style, _, _ in _STAGES
        ],
        tasks=[("The stages, each needing the one before.", tasks)],
    )


_BUILDERS: dict[str, Callable[[_Options], _Spec]] = {
    "feature": _feature,
    "migration": _migration,
    "research": _research,
    "swarm": _swarm,
    "pipeline": _pipeline,
}


def _title(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


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


def _render(spec: _Spec, template: str, provider: str) -> str:
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
    parts += ["\n", _agents_section(spec), "\n", _tasks_section(spec)]
    return "".join(parts)


def _header(spec: _Spec, template: str) -> str:
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


def _agents_section(spec: _Spec) -> str:
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


def _tasks_section(spec: _Spec) -> str:
    out = _comment(
        "What is done. needs: the tasks whose results this one receives (the DAG); "
        "category: research, architecture, implementation, testing, documentation or "
        "other; role: only agents of that role take it; style: overrides the agent's."
    )
    out += "tasks:\n"
    for note, group in spec.tasks:
        out += _comment(note, 2) + _dump(group, 2)
    return out
