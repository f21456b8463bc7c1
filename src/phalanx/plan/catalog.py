"""The five plan templates (feature, migration, research, swarm, pipeline), each a builder
of a template spec from the ``phalanx init`` options."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath
from typing import Any

from ..agents.spec import AgentSpec, assign_names
from ..exceptions import UsageError
from .inputs import (
    MAX_FILES,
    PLAN_FILE,
    TemplateOptions,
    TemplateSpec,
    list_files,
    read_lines,
    relative_to_plan,
)

__all__ = ["BUILDERS"]

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


def _feature(opts: TemplateOptions) -> TemplateSpec:
    tasks = {row[0]: _feature_task(row) for row in _FEATURE_TASKS}
    groups = (
        ("Design first: the implementer and the validator start from the designs.",
         ["design-api", "design-data"]),
        ("Then in parallel: code, a test plan written from the design, documentation.",
         ["implement-api", "write-tests", "implement-storage", "document"]),
        ("Last, the validation report over everything built (HTML, the validator's style).",
         ["validate"]),
    )  # fmt: skip
    return TemplateSpec(
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


def _migration(opts: TemplateOptions) -> TemplateSpec:
    assert opts.target is not None
    if not opts.target.is_dir():
        raise UsageError(
            f"the migration target {opts.target} is not a directory (give it with --target DIR)"
        )
    exclude = [opts.plan_dir / PLAN_FILE] if opts.plan_dir is not None else []
    files = list_files(opts.target, exclude=exclude)
    name = opts.target.name or str(opts.target)
    return TemplateSpec(
        name="migration",
        description=f"Migrate the files under {name} that the analyzer picks "
        f"({len(files)} found at init).",
        about="The codebase-migration case study: an analyzer picks the files to migrate "
        "(at run time, from the target directory), a planner designs the path, migrators "
        "change one file each, testers verify each file once every file is migrated (a "
        "change in one file can break another), and a documenter updates the docs once "
        "every test passed. The five roles are the case study's; migrators and testers are "
        "cloned (count) because per-file work is where the parallelism is: set count: 1 "
        "for the literal five-agent team.",
        brief="Migration goal (edit me): port the code to the current major version of "
        "its language and libraries, keeping behaviour unchanged.",
        brief_note="The goal, shared by every agent as context: edit it once here.",
        workspace=relative_to_plan(opts.target, opts.plan_dir),
        notes=[
            "The plan grows at run time: the analyzer answers the list of files to migrate "
            "(`schema:`), and `migrate` and `test` are templates with one task per file it "
            f"named (`foreach: analyze.files`). It picks among the {len(files)} files found "
            "at init (hidden and binary files skipped): its prompt lists them, its schema's "
            "enum holds it to them (drop the enum to let it name any path) and its default "
            "is all of them; re-run `phalanx init` after the target changes.",
            "Agents only read files (read_file, list_files, search): add edit_file or "
            "write_file to an agent's tools to let it change them (with `isolation: "
            "worktree` each agent works on its own git branch).",
        ],
        limits=(
            f"Growth bounds: one migrate and one test task per file, up to {MAX_FILES} files.",
            {"max_tasks": 2 * MAX_FILES + 10},
        ),
        agents=_migration_agents(opts.agents),
        tasks=_migration_tasks(files),
    )


def files_schema(files: Sequence[PurePosixPath]) -> dict[str, Any]:
    """The analyzer's answer: the files to migrate, among those found at init (an enum: a
    constrained decoder cannot misspell a path, a model cannot name one that is not there),
    by default all of them (what ``--provider sim`` answers: one task per file)."""
    return {
        "type": "object",
        "required": ["files"],
        "properties": {
            "files": {
                "type": "array",
                "items": {"type": "string", "enum": [str(f) for f in files]},
                "default": [str(f) for f in files],
            },
        },
    }


def _migration_agents(n: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "Picks the files to migrate, from the target directory (its workspace).",
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


def _path_arg(path: PurePosixPath) -> str:
    """read_file's arguments for ``path``, spelled out: a small model copies them as given."""
    return json.dumps({"path": str(path)})


_READ_ITEM = '{"path": "{item}"}'  # read_file's arguments spelled out: a small model copies them


def _migration_tasks(files: Sequence[PurePosixPath]) -> list[tuple[str, list[dict[str, Any]]]]:
    return [
        (
            "Analysis and plan: the analyzer's answer decides which files are migrated.",
            [
                {
                    "id": "analyze",
                    "title": "pick the files to migrate",
                    "category": "research",
                    "role": "analyzer",
                    "schema": files_schema(files),
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
        (
            "One migration task per file the analyzer named, expanded at run time "
            "(migrate[0], migrate[1], ...; they run in parallel on the migrators).",
            [
                {
                    "id": "migrate",
                    "title": "migrate {item}",
                    "category": "implementation",
                    "role": "migrator",
                    "foreach": "analyze.files",
                    "max_items": MAX_FILES,
                    "needs": ["plan-migration"],
                    "prompt": "Migrate `{item}` following the migration plan. Read it first: "
                    f"read_file {_READ_ITEM}; then answer with the changes to make.",
                },
            ],
        ),
        (
            "One test task per file, once every file is migrated (test[0], test[1], ...).",
            [
                {
                    "id": "test",
                    "title": "test {item}",
                    "category": "testing",
                    "role": "tester",
                    "foreach": "analyze.files",
                    "max_items": MAX_FILES,
                    "needs": ["migrate"],
                    "prompt": f"Verify the migration of `{{item}}`: read it (read_file "
                    f"{_READ_ITEM}), then list each check and its result.",
                },
            ],
        ),
        (
            "The documentation, once every file is migrated and tested.",
            [
                {
                    "id": "document",
                    "title": "update the docs",
                    "category": "documentation",
                    "role": "documenter",
                    "needs": ["test"],
                    "prompt": "Update the documentation: what changed, module by module, and "
                    "what users of the code must do.",
                },
            ],
        ),
    ]


def _analyze_prompt(files: Sequence[PurePosixPath], shown: int = 60) -> str:
    listing = ", ".join(str(f) for f in files[:shown])
    more = f" and {len(files) - shown} more (list_files shows them)" if len(files) > shown else ""
    return (
        "Pick the files of the workspace to migrate: every file that needs a change for "
        'the goal (usually all of them). Answer {"files": [path, ...]} with the paths '
        "exactly as listed: "
        f"{listing}{more}."
    )


_ANGLES = (
    "the options that exist and how they compare",
    "operational cost, failure modes and how each option is run in production",
    "what teams that adopted each option report in practice",
    "security and compliance concerns",
    "the effort of moving from what we have today",
    "performance and scaling limits",
)


def _research(opts: TemplateOptions) -> TemplateSpec:
    questions = (
        read_lines(opts.inputs)
        if opts.inputs is not None
        else [f"Research {_ANGLES[i % len(_ANGLES)]}." for i in range(opts.agents)]
    )
    return TemplateSpec(
        name="research",
        description="Sub-questions chosen by a planner, researched in parallel, then synthesised.",
        about="The plan grows at run time: a planner splits the question into sub-questions "
        "(`schema:`), `research` is a template with one researcher task per sub-question "
        "(`foreach: plan.questions`), in parallel, and the synthesiser, which needs all of "
        "them, combines their findings into one answer. Edit the question in the brief; "
        f"the {len(questions)} suggested sub-questions (the planner's prompt, and its "
        "answer's default) come from --inputs FILE (one per line) or are generic angles.",
        brief="Question (edit me): which background-job system should our Python web service use?",
        brief_note="The question, shared by every agent as context: edit it once here.",
        agents=[
            (
                "Splits the question into sub-questions researchers answer independently.",
                {"role": "planner", "style": "yaml"},
            ),
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
                "The planner's answer decides the sub-questions.",
                [
                    {
                        "id": "plan",
                        "title": "choose the sub-questions",
                        "category": "research",
                        "role": "planner",
                        "schema": questions_schema(questions),
                        "prompt": _plan_prompt(questions),
                    },
                ],
            ),
            (
                "One researcher task per sub-question, expanded at run time (research[0], "
                "research[1], ...).",
                [
                    {
                        "id": "research",
                        "title": "{item}",
                        "category": "research",
                        "role": "researcher",
                        "foreach": "plan.questions",
                        "max_items": max(len(questions), 2 * opts.agents, 20),
                        "prompt": "{item}",
                    },
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
                        "needs": ["research"],
                        "prompt": "Combine the findings into one answer to the question: the "
                        "recommendation, the reasons, and what is still uncertain.",
                    },
                ],
            ),
        ],
    )


def questions_schema(questions: Sequence[str]) -> dict[str, Any]:
    """The planner's answer: the sub-questions, by default the suggested ones (what
    ``--provider sim`` answers, so a simulated run grows one task per suggestion)."""
    return {
        "type": "object",
        "required": ["questions"],
        "properties": {
            "questions": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": 300},
                "minItems": 1,
                "default": list(questions),
            },
        },
    }


def _plan_prompt(questions: Sequence[str], shown: int = 40) -> str:
    listing = " ".join(f"- {q}" for q in questions[:shown])
    more = f" (and {len(questions) - shown} more)" if len(questions) > shown else ""
    return (
        "Split the question into sub-questions that researchers can answer independently, "
        'one per researcher. Answer {"questions": [sub-question, ...]}. Suggested '
        f"sub-questions: {listing}{more}"
    )


def _swarm(opts: TemplateOptions) -> TemplateSpec:
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
    return TemplateSpec(
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


def _swarm_items(opts: TemplateOptions) -> tuple[list[tuple[str, str]], str | None, str]:
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
                f"Review `{f}`: read it (read_file {_path_arg(f)}), then summarise what it "
                "does and any problem you see.",
            )
            for f in files
        ]
        return items, relative_to_plan(src, opts.plan_dir), f"the files under {src}"
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


def _pipeline(opts: TemplateOptions) -> TemplateSpec:
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
    return TemplateSpec(
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


def _title(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


BUILDERS: dict[str, Callable[[TemplateOptions], TemplateSpec]] = {
    "feature": _feature,
    "migration": _migration,
    "research": _research,
    "swarm": _swarm,
    "pipeline": _pipeline,
}
