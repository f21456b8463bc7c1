"""phalanx is a real package: the wheel carries its license, typing marker, one version and
the examples, and installed into a clean venv it runs `phalanx --version` and `phalanx init`.

The wheel is built without build isolation (setuptools is in the lock), and installed with
uv from its cache only (`--offline`): the packages are the locked ones `make venv` put there,
so nothing is downloaded while the test runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import phalanx

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
CORE = ROOT / "requirements" / "core.txt"  # the lock's versions of phalanx's own dependencies
UV = shutil.which("uv", path=str(Path(sys.executable).parent))


def sh(*argv: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, f"{argv}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    src = tmp_path_factory.mktemp("src") / "phalanx"
    # build from a copy, as a fresh checkout would: no build/ or egg-info of the editable
    shutil.copytree(
        ROOT,
        src,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".venv*", ".git", ".phalanx", "*_cache", "__pycache__", "build", "dist", "*.egg-info"
        ),
    )
    sh(sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", out, src)
    (whl,) = out.glob("phalanx-*.whl")
    return whl


def pins(path: Path) -> dict[str, str]:
    lines = (line.split(";")[0].strip() for line in path.read_text().splitlines())
    return dict(line.split("==", 1) for line in lines if "==" in line)


def test_core_requirements_are_the_locks_versions() -> None:
    core, lock = pins(CORE), pins(LOCK)
    assert {"pydantic", "pyyaml", "rich", "jsonschema"} <= set(core)
    assert {name: lock.get(name) for name in core} == core


def test_wheel_contents(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    dist = f"phalanx-{phalanx.__version__}.dist-info"
    assert wheel.name.startswith(f"phalanx-{phalanx.__version__}-py3-none-any")
    assert "phalanx/py.typed" in names
    assert "phalanx/examples/feature-team.yaml" in names
    assert "phalanx/examples/evals/team.yaml" in names
    assert "phalanx/examples/evals/fixtures/add/calc.py" in names
    for shipped in (
        "README.md",
        "python_api.py",
        "anthropic.yaml",
        "openai.yaml",
        "llama-server.yaml",
        "ray.yaml",
        "tools-and-hooks/plan.yaml",
        "tools-and-hooks/hooks/guard.py",
        "tools-and-hooks/hooks/notify.py",
        "tools-and-hooks/project/slug.py",
        "tools-and-hooks/project/test_slug.py",
        "mcp/plan.yaml",
        "mcp/notes_server.py",
    ):
        assert f"phalanx/examples/{shipped}" in names, shipped
    assert f"{dist}/licenses/LICENSE" in names
    meta = zipfile.ZipFile(wheel).read(f"{dist}/METADATA").decode()
    assert f"Version: {phalanx.__version__}" in meta
    assert "License-Expression: MIT" in meta
    assert "Classifier: Typing :: Typed" in meta
    assert "Requires-Python: >=3.11" in meta
    # library ranges, never a pin: whoever installs phalanx keeps their resolver's freedom
    requires = [
        line.split(";")[0] for line in meta.splitlines() if line.startswith("Requires-Dist:")
    ]
    assert len(requires) > 10 and not [r for r in requires if "==" in r], requires


@pytest.mark.skipif(UV is None, reason="uv is installed from the lock by make venv")
def test_wheel_installs_and_runs_in_a_clean_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", "--without-pip", venv)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    assert UV is not None
    # the locked core dependencies (no resolution: uv's cache has them from make venv)
    sh(UV, "pip", "sync", "--offline", "--quiet", "--python", py, CORE, env=env)
    sh(UV, "pip", "install", "--offline", "--quiet", "--no-deps", "--python", py, wheel, env=env)
    where = sh(py, "-c", "import phalanx; print(phalanx.__file__)", cwd=tmp_path, env=env)
    assert str(venv) in where  # the wheel, not this checkout
    version = sh(venv / "bin" / "phalanx", "--version", cwd=tmp_path, env=env)
    assert version.strip() == f"phalanx {phalanx.__version__}"
    out = sh(
        venv / "bin" / "phalanx", "init", "--template", "feature", "proj", cwd=tmp_path, env=env
    )
    assert "wrote" in out and (tmp_path / "proj").is_dir()
    assert list((tmp_path / "proj").glob("*.yaml"))
    names = sh(venv / "bin" / "phalanx", "init", "--example", "list", cwd=tmp_path, env=env)
    listed = [line.split()[0] for line in names.splitlines()]
    assert {"feature-team", "python_api", "tools-and-hooks", "mcp", "ray"} <= set(listed)
    sh(
        venv / "bin" / "phalanx",
        "init",
        "--example",
        "tools-and-hooks",
        "ex",
        cwd=tmp_path,
        env=env,
    )
    assert (tmp_path / "ex" / "tools-and-hooks" / "hooks" / "guard.py").is_file()
    sh(venv / "bin" / "phalanx", "init", "--example", "feature-team", "ex", cwd=tmp_path, env=env)
    shipped = ROOT / "src" / "phalanx" / "examples" / "feature-team.yaml"
    assert (tmp_path / "ex" / "feature-team.yaml").read_text() == shipped.read_text()
