"""One exception tree: every error class phalanx defines is a PhalanxError, is exported by
``phalanx.exceptions``, and sits in the tree drawn in its docstring under its real parent."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest

import phalanx
from phalanx import exceptions


def drawn_tree() -> dict[str, str]:
    """``{class: parent}`` from the docstring's box drawing (the root's parent is "")."""
    doc = exceptions.__doc__ or ""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        m = re.match(r"^(\s*(?:[│ ]   )*)(?:[├└]── )?([A-Z]\w+)(?:\s|$)", line)
        if not m or not line.strip() or m.group(2) not in dir(exceptions):
            continue
        depth = len(m.group(1)) // 4 + (1 if "──" in line else 0)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[m.group(2)] = stack[-1][1] if stack else ""
        stack.append((depth, m.group(2)))
    return parents


def phalanx_exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(phalanx.__path__, "phalanx."):
        if ".examples" in info.name or info.name.endswith(
            ("__main__", "ray_engine", "web", "otel")
        ):
            continue  # optional extras (their errors come from the exceptions module too)
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            # private classes (a leading _) are control flow inside one module, never raised
            # to a caller
            public = not obj.__name__.startswith("_")
            if issubclass(obj, BaseException) and obj.__module__.startswith("phalanx") and public:
                found[obj.__name__] = obj
    return found


def test_every_error_class_is_a_phalanx_error_in_the_drawn_tree() -> None:
    tree = drawn_tree()
    classes = phalanx_exception_classes()
    assert set(classes) == set(tree), "drawn vs defined"
    for name, cls in classes.items():
        assert cls.__module__ == "phalanx.exceptions", f"{name} defined outside exceptions.py"
        assert issubclass(cls, exceptions.PhalanxError), name
        assert name in exceptions.__all__, f"{name} is not exported"
        parent = tree[name]
        if parent:
            assert getattr(exceptions, parent) in cls.__mro__[1:], (name, parent)


def test_the_drawing_reads_parents() -> None:
    tree = drawn_tree()
    assert tree["PhalanxError"] == ""
    assert tree["PlanError"] == "UsageError"
    assert tree["CommsError"] == "ToolError"
    assert tree["JournalError"] == "PhalanxError"


def test_style_error_is_still_a_value_error() -> None:
    assert issubclass(exceptions.StyleError, ValueError)


def test_budget_exhausted_is_raised_for_a_run_stopped_by_a_budget() -> None:
    plan = phalanx.Plan.from_dict(
        {
            "name": "budget",
            "provider": "sim",
            "providers": {"sim": {"latency": {"distribution": "fixed", "median_ms": 1}}},
            "limits": {"max_tokens": 1},
            "agents": [{"role": "implementer"}],
            "tasks": [{"id": f"t{i}", "prompt": "x"} for i in range(5)],
        }
    )
    result = phalanx.run_sync(plan, state=None)
    assert result.status == "budget_exhausted"
    with pytest.raises(phalanx.BudgetExhausted, match="budget"):
        result.raise_for_status()


def test_one_line_never_mangles_names_and_keeps_key_paths_whole() -> None:
    from phalanx.exceptions import one_line

    points = "on_run_start, before_task, after_task, on_error, on_message, on_scale, on_breaker"
    text = f"plan: hooks[0].on: unknown hook point 'x' (known: {points}, on_run_end)"
    cut = one_line(text, 120)
    assert len(cut) <= 120 and " … " in cut  # whole words left out of the middle
    assert cut.startswith("plan: hooks[0].on: unknown hook point 'x'")
    assert cut.endswith("on_breaker, on_run_end)")
    words = set(text.split(" ")) | {"…"}
    assert all(w in words for w in cut.split(" ")), cut  # no word cut in two
    model = "openai-compatible:" + "very-long-model-name-" * 6 + "q4"
    text = f"{model} needs its server: --base-url URL or providers.openai-compatible.base_url"
    cut = one_line(text, 100)
    assert len(cut) <= 100 and cut.endswith("providers.openai-compatible.base_url")
    assert "--base-url" in cut and "very-long-model-name-" not in cut  # the value gave way
