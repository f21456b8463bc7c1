"""Plan files are parsed by libyaml when PyYAML has it (issue 22: an 8,000-task plan took
5.6 s to load, parsed twice by the Python parser; 0.8 s now), with the same reading as the
Python parser: YAML 1.2 booleans, the same data and the same lines for every field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from phalanx.plan import file as plan_file
from phalanx.plan.schema import FastPlanLoader, PlanLoader

EXAMPLES = sorted((Path(plan_file.__file__).parents[1] / "examples").rglob("*.yaml"))


def _lines(node: yaml.Node | None) -> list[int]:
    if node is None:
        return []
    out = [node.start_mark.line]
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            out += _lines(k) + _lines(v)
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            out += _lines(v)
    return out


def test_libyaml_does_the_parsing_when_pyyaml_has_it() -> None:
    if not hasattr(yaml, "CSafeLoader"):
        pytest.skip("this PyYAML has no libyaml")
    assert issubclass(FastPlanLoader, yaml.CSafeLoader)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_both_parsers_read_every_example_the_same(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    fast_root, fast = plan_file._parse(text, FastPlanLoader, str(path))
    slow_root, slow = plan_file._parse(text, PlanLoader, str(path))
    assert fast == slow
    assert _lines(fast_root) == _lines(slow_root)


def test_yaml_1_2_booleans_with_either_parser() -> None:
    text = "on: before_task\nyes: no\nflag: true\noff: False\n"
    for loader in (FastPlanLoader, PlanLoader):
        _, data = plan_file._parse(text, loader, "x.yaml")
        assert data == {"on": "before_task", "yes": "no", "flag": True, "off": False}


def test_a_yaml_error_is_said_in_the_python_parsers_words(tmp_path: Path) -> None:
    bad = tmp_path / "plan.yaml"
    bad.write_text("name: x\ntasks: [a\n  b: c\n", encoding="utf-8")
    with pytest.raises(Exception) as caught:
        plan_file.read_yaml(bad)
    try:
        yaml.load(bad.read_text(), Loader=PlanLoader)
    except yaml.YAMLError as exc:
        assert str(getattr(exc, "problem", "")) in str(caught.value)
