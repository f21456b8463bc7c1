"""What the plan templates are made from: their inputs (a target directory's files, a text
file's lines), task-id slugs, and the spec a template builds before it is written as YAML.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..exceptions import UsageError

__all__ = [
    "MAX_FILES",
    "MAX_LINES",
    "PLAN_FILE",
    "TemplateOptions",
    "TemplateSpec",
    "list_files",
    "read_lines",
    "relative_to_plan",
    "task_slug",
    "unique_slugs",
]

PLAN_FILE = "plan.yaml"


MAX_FILES = 500  # files of a directory (migration, swarm)


MAX_LINES = 5000  # lines of a text file (swarm, research)


SKIP_DIRS = frozenset({"__pycache__", "node_modules"})


_SLUG_BAD = re.compile(r"[^A-Za-z0-9_.]+")


_SLUG_MAX = 100  # task ids are at most 128 characters: "migrate-" + slug


@dataclass(slots=True)
class TemplateSpec:
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
    limits: tuple[str, dict[str, Any]] | None = None  # (comment, the plan's limits:)


@dataclass(frozen=True, kw_only=True, slots=True)
class TemplateOptions:
    target: Path | None
    inputs: Path | None
    agents: int
    plan_dir: Path | None


def task_slug(path: PurePosixPath | str) -> str:
    """A task-id-safe slug of a relative path: ``src/app/models.py`` -> ``src-app-models.py``
    (long ones are cut and end in a hash of the whole path)."""
    text = str(path)
    slug = _SLUG_BAD.sub("-", text).strip("-.") or "item"
    if len(slug) > _SLUG_MAX:
        digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
        slug = slug[: _SLUG_MAX - 9].rstrip("-.") + "-" + digest
    return slug


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


def unique_slugs(paths: Sequence[PurePosixPath]) -> list[str]:
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


def relative_to_plan(path: Path, plan_dir: Path | None) -> str:
    """``path`` as the plan file should name it: relative to the plan's folder if given."""
    if plan_dir is None:
        return str(path.resolve())
    return Path(os.path.relpath(path.resolve(), plan_dir.resolve())).as_posix()
