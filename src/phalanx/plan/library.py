"""The agent library: tuned agent specs saved as files, versioned, with their eval history.

"Perfect one, then replicate": an agent spec (role, style, tools, hooks, context, model) is
saved once it does well, evaluated (``phalanx eval``), and referenced by plans as
``agent: reviewer@2``. Two folders hold saved agents:

- the project's, ``.phalanx/agents/`` (or ``$PHALANX_AGENTS_DIR``), searched first;
- the user's, ``~/.config/phalanx/agents/`` (``$XDG_CONFIG_HOME/phalanx/agents``, or
  ``$PHALANX_USER_AGENTS``).

Layout: ``NAME/VERSION.yaml`` is the spec (written once, read-only: a version never changes),
``NAME/VERSION.evals.jsonl`` its eval history (one JSON line per eval, appended by
:func:`phalanx.evals.runner.evaluate`), and ``NAME/VERSION.removed`` marks a removed version, so its
number is never given to another spec. ``NAME`` alone means the latest version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .._util import describe_error
from ..agents.spec import AgentSpec
from ..cost import Price
from ..exceptions import PlanError, UsageError
from .schema import AgentModel, PriceModel

__all__ = [
    "PROJECT_ENV",
    "USER_ENV",
    "EvalRecord",
    "Library",
    "SavedAgent",
    "load",
    "parse_ref",
    "project_dir",
    "schema_entry",
    "spec_to_dict",
    "user_dir",
]

PROJECT_ENV = "PHALANX_AGENTS_DIR"
USER_ENV = "PHALANX_USER_AGENTS"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_REF_RE = re.compile(r"^(?P<name>[^@\s]+)(?:@(?P<version>[^@\s]*))?$")
Scope = Literal["project", "user"]


def project_dir() -> Path:
    """The project's saved agents: ``$PHALANX_AGENTS_DIR`` or ``./.phalanx/agents``."""
    return Path(os.environ.get(PROJECT_ENV) or Path(".phalanx") / "agents")


def user_dir() -> Path:
    """The user's saved agents: ``$PHALANX_USER_AGENTS``, else
    ``$XDG_CONFIG_HOME/phalanx/agents``, else ``~/.config/phalanx/agents``."""
    if os.environ.get(USER_ENV):
        return Path(os.environ[USER_ENV])
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "phalanx" / "agents"


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``"reviewer@2"`` -> ``("reviewer", 2)``; ``"reviewer"`` -> ``("reviewer", None)``."""
    m = _REF_RE.fullmatch(ref.strip())
    if m is None or not NAME_RE.fullmatch(m["name"]):
        raise UsageError(
            f"{ref!r} is not an agent name: lowercase letters, digits, '-' or '_', "
            "then optionally @VERSION (reviewer, reviewer@2)"
        )
    version = m["version"]
    if version is None:
        return m["name"], None
    if not version.isdigit() or int(version) < 1:
        raise UsageError(f"{ref!r}: the version after '@' is a whole number from 1")
    return m["name"], int(version)


def spec_to_dict(spec: AgentSpec) -> dict[str, Any]:
    """A spec as the keys of a plan's agent entry (no name: a saved agent is cloned)."""
    return {
        "role": spec.role,
        "style": spec.style,
        "provider": spec.provider,
        "system": spec.system_prompt,
        "skills": sorted(spec.skills),
        "categories": sorted(spec.categories),
        "tools": list(spec.tools),
        "hooks": [h for h in spec.hooks if isinstance(h, dict | str)],
        "context": list(spec.context),
        "context_max_tokens": spec.context_max_tokens,
        "max_turns": spec.max_turns,
        "subscribe": list(spec.subscribe),
        **schema_entry(spec.output_type),
    }


def schema_entry(output_type: Any) -> dict[str, Any]:
    """A typed output as an agent entry's ``schema:`` (none: no key, so the specs saved
    before typed outputs keep their content)."""
    if output_type is None:
        return {}
    if isinstance(output_type, Mapping):
        return {"schema": dict(output_type)}
    return {"schema": output_type.model_json_schema()}


# -- eval history ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EvalRecord:
    """One eval of a saved agent (a line of ``VERSION.evals.jsonl``)."""

    run_id: str
    at: float  # seconds since the epoch
    cases: str  # the case file's name
    n: int  # case runs (cases x repeats)
    passed: int
    pass_rate: float
    ci_low: float  # 95% Wilson interval of the pass rate
    ci_high: float
    repeat: int = 1
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    p50_seconds: float | None = None
    p95_seconds: float | None = None
    style_validity: float | None = None
    provider: str | None = None
    simulated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# -- saved agents --------------------------------------------------------------------------------


class _SavedModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: int
    saved_at: float
    source: str = ""
    spec: dict[str, Any]
    styles: dict[str, dict[str, Any]] = {}
    providers: dict[str, dict[str, Any]] = {}
    prices: dict[str, PriceModel] = {}


@dataclass(frozen=True, kw_only=True)
class SavedAgent:
    """One saved version: the spec and what it needs from a plan (its own styles, the options
    of its provider, prices), where it came from, and its eval history."""

    name: str
    version: int
    scope: Scope
    path: Path
    spec: AgentSpec
    styles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    providers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    prices: Mapping[str, Price] = field(default_factory=dict)
    saved_at: float = 0.0
    source: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def history_path(self) -> Path:
        return self.path.with_name(f"{self.version}.evals.jsonl")

    def history(self) -> list[EvalRecord]:
        """Every eval of this version, oldest first (unreadable lines are skipped)."""
        try:
            lines = self.history_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            with contextlib.suppress(ValueError, TypeError):
                out.append(EvalRecord.from_dict(json.loads(line)))
        return out

    def last_eval(self) -> EvalRecord | None:
        history = self.history()
        return history[-1] if history else None

    def agent_spec(self) -> AgentSpec:
        """The spec, carrying its reference and last eval pass rate (``options``) for the
        autoscaler's ``limits.min_eval_score`` gate."""
        last = self.last_eval()
        return dataclasses.replace(
            self.spec,
            options={
                "agent": self.ref,
                "eval_score": None if last is None else last.pass_rate,
                "eval_run": None if last is None else last.run_id,
            },
        )

    def record_eval(self, record: EvalRecord) -> None:
        """Append ``record`` to this version's eval history."""
        line = json.dumps(record.to_dict(), sort_keys=True) + "\n"
        fd = os.open(self.history_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)

    def document(self) -> dict[str, Any]:
        """The file's content."""
        return {
            "name": self.name,
            "version": self.version,
            "saved_at": self.saved_at,
            "source": self.source,
            "spec": spec_to_dict(self.spec),
            "styles": {k: dict(v) for k, v in self.styles.items()},
            "providers": {k: dict(v) for k, v in self.providers.items()},
            "prices": {k: dataclasses.asdict(v) for k, v in self.prices.items()},
        }


def _spec_from_dict(data: Mapping[str, Any], where: str) -> AgentSpec:
    try:
        model = AgentModel.model_validate(dict(data))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise UsageError(f"{where}: spec.{loc}: {describe_error(err)}") from None
    if model.agent is not None or model.eval_score is not None or model.count != 1:
        raise UsageError(f"{where}: a saved spec has no agent, eval_score or count")
    try:
        (spec,) = model.specs("spec", where)
    except (ValueError, PlanError) as exc:
        raise UsageError(f"{where}: {exc}") from None
    return spec


def _read(path: Path, scope: Scope) -> SavedAgent:
    where = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        model = _SavedModel.model_validate(data)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"{where}: cannot read the saved agent: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise UsageError(f"{where}: not a saved agent ({loc}: {err['msg']})") from None
    prices = {k: Price(**v.model_dump()) for k, v in model.prices.items()}
    return SavedAgent(
        name=model.name,
        version=model.version,
        scope=scope,
        path=path,
        spec=_spec_from_dict(model.spec, where),
        styles=model.styles,
        providers=model.providers,
        prices=prices,
        saved_at=model.saved_at,
        source=model.source,
    )


class Library:
    """The saved agents of the project folder and the user folder (project first)."""

    def __init__(self, project: Path | str | None = None, user: Path | str | None = None) -> None:
        self.project = Path(project) if project is not None else project_dir()
        self.user = Path(user) if user is not None else user_dir()

    def folder(self, scope: Scope) -> Path:
        return self.project if scope == "project" else self.user

    def _scopes(self, scope: Scope | None) -> tuple[Scope, ...]:
        return ("project", "user") if scope is None else (scope,)

    # -- reading ---------------------------------------------------------------------------
    @staticmethod
    def _numbers(folder: Path, suffix: str) -> list[int]:
        if not folder.is_dir():
            return []
        return sorted(
            int(p.name[: -len(suffix)])
            for p in folder.iterdir()
            if p.name.endswith(suffix) and p.name[: -len(suffix)].isdigit()
        )

    def versions(self, name: str, scope: Scope) -> list[int]:
        """The saved (not removed) versions of ``name`` in one folder, ascending."""
        return self._numbers(self.folder(scope) / name, ".yaml")

    def _removed(self, name: str, scope: Scope) -> list[int]:
        return self._numbers(self.folder(scope) / name, ".removed")

    def get(self, ref: str, *, scope: Scope | None = None) -> SavedAgent:
        """The saved agent ``NAME`` (latest version) or ``NAME@VERSION``. A missing one is a
        :class:`UsageError` of one line."""
        name, version = parse_ref(ref)
        known = [(s, self.versions(name, s), self._removed(name, s)) for s in self._scopes(scope)]
        known = [k for k in known if k[1] or k[2]]
        if not known:
            raise UsageError(f"no saved agent {name!r} (see 'phalanx agents list')")
        for s, have, _ in known:
            if have and (version is None or version in have):
                return _read(self.folder(s) / name / f"{version or have[-1]}.yaml", s)
        if version is None:
            raise UsageError(f"every version of {name!r} was removed")
        _, have, removed = known[0]
        state = "was removed" if version in removed else "does not exist"
        listed = ", ".join(map(str, have)) or "none left"
        raise UsageError(f"{name}@{version} {state} (saved versions: {listed})")

    def names(self, scope: Scope | None = None) -> Iterator[tuple[Scope, str]]:
        for s in self._scopes(scope):
            folder = self.folder(s)
            if folder.is_dir():
                for p in sorted(folder.iterdir()):
                    if p.is_dir() and NAME_RE.fullmatch(p.name) and self.versions(p.name, s):
                        yield s, p.name

    def list_agents(self, scope: Scope | None = None) -> list[SavedAgent]:
        """The latest version of every saved agent (project folder first)."""
        return [self.get(name, scope=s) for s, name in self.names(scope)]

    # -- writing ---------------------------------------------------------------------------
    def save(
        self,
        name: str,
        spec: AgentSpec,
        *,
        styles: Mapping[str, Mapping[str, Any]] | None = None,
        providers: Mapping[str, Mapping[str, Any]] | None = None,
        prices: Mapping[str, Price] | None = None,
        source: str = "",
        scope: Scope = "project",
    ) -> tuple[SavedAgent, bool]:
        """Save ``spec`` as the next version of ``name``; returns it and whether it is new
        (a spec identical to the latest version is not saved again)."""
        if not NAME_RE.fullmatch(name):
            raise UsageError(
                f"agent name {name!r}: use lowercase letters, digits, '-' or '_' (up to 64)"
            )
        folder = self.folder(scope) / name
        draft = SavedAgent(
            name=name,
            version=0,
            scope=scope,
            path=folder / "0.yaml",
            spec=dataclasses.replace(spec, name=None, options={}),
            styles={k: dict(v) for k, v in (styles or {}).items()},
            providers={k: dict(v) for k, v in (providers or {}).items()},
            prices=dict(prices or {}),
            source=source,
        )
        have = self.versions(name, scope)
        if have:
            latest = self.get(f"{name}@{have[-1]}", scope=scope)
            if _same(latest, draft):
                return latest, False
        version = max([0, *have, *self._removed(name, scope)]) + 1
        try:
            folder.mkdir(parents=True, exist_ok=True)
            while True:
                path = folder / f"{version}.yaml"
                saved = dataclasses.replace(draft, version=version, path=path, saved_at=time.time())
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
                except FileExistsError:  # another save took this number
                    version += 1
                    continue
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(_render(saved))
                return saved, True
        except OSError as exc:
            raise UsageError(f"{folder}: cannot save {name}: {exc.strerror or exc}") from None

    def remove(self, ref: str, *, every: bool = False, scope: Scope | None = None) -> list[int]:
        """Remove ``NAME@VERSION`` (or, with ``every``, all versions of ``NAME``) and its eval
        history; returns the versions removed. Their numbers are never reused."""
        name, version = parse_ref(ref)
        if version is None and not every:
            raise UsageError(f"say which version ({name}@N), or remove every version with --all")
        found = self.get(ref, scope=scope)
        folder = found.path.parent
        targets = [version] if version is not None else self.versions(name, found.scope)
        for v in targets:
            (folder / f"{v}.removed").touch()
            with contextlib.suppress(FileNotFoundError):
                (folder / f"{v}.evals.jsonl").unlink()
            (folder / f"{v}.yaml").unlink()
        return targets


def _same(a: SavedAgent, b: SavedAgent) -> bool:
    keys = ("spec", "styles", "providers", "prices")
    da, db = a.document(), b.document()
    return all(da[k] == db[k] for k in keys)


def _render(saved: SavedAgent) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(saved.saved_at))
    head = (
        f"# phalanx agent {saved.ref}, saved {when}"
        + (f" from {saved.source}" if saved.source else "")
        + ".\n# A saved version never changes: save a new version to change the spec.\n"
    )
    return head + yaml.safe_dump(saved.document(), sort_keys=False, allow_unicode=True)


def load(ref: str) -> SavedAgent:
    """The saved agent ``NAME`` or ``NAME@VERSION`` from the default folders."""
    return Library().get(ref)
