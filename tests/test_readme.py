"""The README's code blocks still work: every Python block runs, every YAML plan loads (a
fragment merges into a minimal plan), every ``phalanx ...`` command line parses, and every
dotted name it mentions (``phalanx.x.y``) resolves."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from phalanx.cli.parser import build_parser
from phalanx.plan import Plan
from phalanx.plan.schema import PlanLoader

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
BLOCKS = [
    (m.group(1), m.group(2), README[: m.start()].count("\n") + 1) for m in BLOCK.finditer(README)
]


def blocks(lang: str) -> list[Any]:
    return [pytest.param(text, id=f"line{line}") for kind, text, line in BLOCKS if kind == lang]


@pytest.mark.parametrize("code", blocks("python"))
def test_python_blocks_run(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PHALANX_STATE_DIR", str(tmp_path / "state"))
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})


MINIMAL = {
    "provider": "sim",
    "agents": [{"role": "implementer"}],
    "tasks": [{"id": "t", "prompt": "x"}],
}


@pytest.mark.parametrize("text", blocks("yaml"))
def test_yaml_blocks_are_valid_plans_or_fragments(text: str) -> None:
    data = yaml.load(text, Loader=PlanLoader)  # YAML 1.2 booleans, as plan files are read
    assert isinstance(data, dict)
    merged = {**MINIMAL, **data}
    for key in ("agents", "tasks"):  # a fragment of a list: keep its entries
        if isinstance(data.get(key), list):
            merged[key] = data[key]
    if "styles" in data and not data.get("agents"):
        merged["agents"] = [{"role": "implementer", "style": next(iter(data["styles"]))}]
    plan = Plan.from_dict(merged, source="README.md")
    assert plan.tasks


def concrete(synopsis: str) -> str:
    """A synopsis as a command: optional ``[...]`` parts dropped, the first of ``a | b``."""
    while True:
        shorter = re.sub(r"\[[^\[\]]*\]", "", synopsis)
        if shorter == synopsis:
            break
        synopsis = shorter
    return synopsis.split(" | ")[0].strip()


def command_lines() -> list[Any]:
    out = []
    for kind, text, line in BLOCKS:
        if kind not in ("bash", ""):
            continue
        for i, raw in enumerate(text.splitlines()):
            cmd = raw.split("  #")[0].strip()
            if cmd.startswith("phalanx "):
                out.append(pytest.param(concrete(cmd), id=f"line{line + 1 + i}"))
    return out


@pytest.mark.parametrize("cmd", command_lines())
def test_command_lines_parse(cmd: str) -> None:
    argv = shlex.split(cmd)[1:]
    args = build_parser().parse_args(argv)
    assert args.command


def dotted_names() -> list[str]:
    names = set(re.findall(r"`@?(phalanx(?:\.[A-Za-z_]\w*)+)(?:\([^`]*\))?`", README))
    return sorted(names)


@pytest.mark.parametrize("name", dotted_names())
def test_dotted_names_resolve(name: str) -> None:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return
    raise AssertionError(name)


def test_the_readme_has_blocks_of_each_kind() -> None:
    kinds = {kind for kind, _, _ in BLOCKS}
    assert {"python", "yaml", "bash"} <= kinds
    assert command_lines() and dotted_names()
