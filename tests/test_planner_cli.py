"""`phalanx plan` on the command line: a model that cannot plan is one clear line, exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from phalanx.cli.app import main


def test_plan_with_a_model_that_cannot_plan_fails_clearly(
    state: Path, tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "plan.yaml"
    assert main(["plan", "build a todo app", "--provider", "sim", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a valid plan after 3 tries" in err[0]
    assert not out.exists()  # nothing half-written
