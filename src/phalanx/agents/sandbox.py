"""``run_command``'s sandbox: every command runs inside bubblewrap (``bwrap``).

Inside, the agent's workspace is the only writable path that outlives the command (bound
read-write at its own path, and the working directory). The system is visible read-only
(``/usr``, ``/bin``, ``/sbin``, ``/lib*`` and a few files of ``/etc``: no ``/etc/shadow``),
and so is the installation of the program that runs (a virtualenv, a pyenv Python: the
folder above its ``bin``). Everything else is absent: other agents' worktrees, the phalanx
state directory and its journal, the user's home (an empty private one replaces it), the
host's ``/tmp`` (a private one), its processes (a pid namespace with a fresh ``/proc``), its
devices (a minimal ``/dev``) and, unless the plan says ``commands: {network: true}``, the
network (a network namespace with only loopback). The command has no capabilities, runs in
a session of its own, dies with the tool (``--die-with-parent``; the pid namespace takes
every process it started with it) and gets CPU-time and address-space limits.

Where ``bwrap`` is missing, commands are refused with a line saying how to install it,
unless the plan opts out with ``commands: {sandbox: none}``.
"""

from __future__ import annotations

import math
import os
import resource
import shutil
from collections.abc import Callable
from pathlib import Path

from .workspace import ToolError

__all__ = [
    "INSTALL_HINT",
    "SANDBOXES",
    "bwrap_path",
    "limits",
    "sandbox_warning",
    "wrap",
]

SANDBOXES = ("bwrap", "none")
INSTALL_HINT = (
    "run_command needs bubblewrap to sandbox commands: install it (apt-get install "
    "bubblewrap, dnf install bubblewrap, pacman -S bubblewrap), or set commands: "
    "{sandbox: none} in the plan to run them unsandboxed"
)
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_ENTRIES = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "gai.conf",
    "group",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "pki",
    "protocols",
    "resolv.conf",
    "services",
    "ssl",
    "timezone",
)


_HIDDEN: set[str] = set()  # folders no sandboxed program sees (the state dirs of runs)


def hide(path: str | os.PathLike[str]) -> None:
    """Keep ``path`` (a run's state dir) out of every sandbox: masked with an empty tmpfs
    where it lies inside the writable folder, and never bound as part of an installation."""
    _HIDDEN.add(os.path.realpath(path))


def _shown(root: str, extra: list[str]) -> list[str]:
    """The workspace (writable), the ``extra`` folders (read-only) and, over the hidden
    folders inside them (a run's state dir; a ``.phalanx`` in one of them), an empty tmpfs:
    mounted shallowest first, so a mask covers what lies under it and a workspace inside a
    masked folder is bound again on top."""
    shown = [root, *extra]
    defaults = {os.path.join(s, ".phalanx") for s in shown}
    hidden = _HIDDEN | {d for d in defaults if os.path.isdir(d)}
    masks = [h for h in hidden if h not in shown and any(_inside(h, s) for s in shown)]
    mounts: list[tuple[str, tuple[str, ...]]] = [(p, ("--ro-bind", p, p)) for p in extra]
    mounts.append((root, ("--bind", root, root)))
    mounts += [(h, ("--tmpfs", h)) for h in masks]
    mounts.sort(key=lambda m: m[0].rstrip(os.sep).count(os.sep))
    return [arg for _, args in mounts for arg in args]


def bwrap_path() -> str | None:
    """The ``bwrap`` executable, or ``None`` where it is not installed."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", "/bin", "/usr/local/bin"])
    return shutil.which("bwrap", path=path)


def sandbox_warning(allow: tuple[str, ...] | list[str], sandbox: str) -> str | None:
    """The warning a run starts with when its commands are not sandboxed, or ``None``."""
    if not allow:
        return None
    if sandbox == "none":
        return (
            "commands run without a sandbox (commands: {sandbox: none}): an allowed command "
            "can read and change any file the phalanx process can"
        )
    if bwrap_path() is None:
        return f"bwrap is not installed, so every run_command will be refused: {INSTALL_HINT}"
    return None


def wrap(
    argv: list[str],
    executable: str,
    workspace: Path,
    *,
    network: bool,
    home: str | None,
    read_only: tuple[str, ...] = (),
    chdir: str | None = None,
) -> list[str]:
    """The argv that runs ``argv`` (its program resolved to ``executable``) in the sandbox;
    ``home`` is the command's ``$HOME`` (hidden, an empty one in its place). ``read_only``:
    more folders shown read-only (an MCP server's own folder; the workspace stays writable
    inside them); ``chdir``: the working directory (default: the workspace)."""
    bwrap = bwrap_path()
    if bwrap is None:
        raise ToolError("sandbox_unavailable", INSTALL_HINT)
    root = os.path.realpath(workspace)
    extra = [os.path.realpath(p) for p in read_only]
    options = [
        *("--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"),
        *(("--share-net",) if network else ()),
        *("--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev"),
        *_private_home(home),
        *_system(),
        *_installations(executable, root, home or "/"),
        *_shown(root, extra),
        *("--chdir", os.path.realpath(chdir) if chdir else root),
    ]
    return [bwrap, *options, "--", executable, *argv[1:]]


def limits(cpu_seconds: float, memory_mb: int) -> Callable[[], None]:
    """A ``preexec_fn`` that caps the command's CPU time and address space (each process of
    it: children inherit the limits)."""
    cpu = max(1, math.ceil(cpu_seconds))
    memory = memory_mb * 1024 * 1024

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        if memory_mb > 0:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


# ------------------------------------------------------------------------ binds


def _system() -> list[str]:
    options: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            options += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            options += ["--ro-bind", path, path]
    for name in ETC_ENTRIES:
        path = os.path.join("/etc", name)
        if os.path.exists(path):
            options += ["--ro-bind", path, path]
    return options


def _private_home(home: str | None) -> list[str]:
    """An empty, private home in place of the user's (programs expect one to exist)."""
    if not home or not os.path.isabs(home) or _under_system(home) or os.path.realpath(home) == "/":
        return []
    return ["--tmpfs", os.path.realpath(home)]


def _installations(executable: str, root: str, home: str) -> list[str]:
    """Read-only binds for the program and its interpreter: each file of their symlink
    chains, and the installation it belongs to where that is safe to show."""
    seen: list[str] = []
    for path in _chain(executable) + _chain(_interpreter(executable)):
        place = _installation(path, root, home)
        if place and place not in seen and not _under_system(place):
            seen.append(place)
    return [arg for place in seen for arg in ("--ro-bind", place, place)]


def _chain(path: str | None) -> list[str]:
    """``path`` and every link it passes through, to the real file (absolute paths)."""
    chain: list[str] = []
    while path and len(chain) < 40:
        path = os.path.abspath(path)
        chain.append(path)
        if not os.path.islink(path):
            break
        path = os.path.join(os.path.dirname(path), os.readlink(path))
    return chain


def _interpreter(executable: str) -> str | None:
    """The absolute interpreter of a ``#!`` script, or ``None``."""
    try:
        with open(executable, "rb") as f:
            first = f.readline(256)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode("utf-8", "replace").split()
    return words[0] if words and os.path.isabs(words[0]) else None


def _installation(path: str, root: str, home: str) -> str | None:
    """The folder above ``bin`` or ``shims`` (a virtualenv, a Python, pyenv), else the
    file's folder, else the
    file; never one that holds the workspace or the home, nor a folder inside the
    workspace (it is bound already)."""
    folder = os.path.dirname(path)
    candidates = [folder, path]
    above = os.path.dirname(folder)
    # shims: pyenv, rbenv, ...; never ~/.local (pip --user, pipx and uv put programs in its
    # bin, while its share holds keyrings and histories): then the bin folder alone
    user_local = os.path.realpath(above) == os.path.join(os.path.realpath(home), ".local")
    if os.path.basename(folder) in ("bin", "sbin", "shims") and not user_local:
        candidates.insert(0, above)
    for place in candidates:
        if _inside(place, root):
            return None
        if not _shows_too_much(place, root, home):
            return place
    return None


def _shows_too_much(place: str, root: str, home: str) -> bool:
    home = os.path.realpath(home)
    real = os.path.realpath(place)
    if any(_inside(x, p) for p in (place, real) for x in (root, home, "/tmp")):
        return True
    state = os.environ.get("PHALANX_STATE_DIR")
    hidden = [*_HIDDEN, *([os.path.realpath(state)] if state else [])]
    return os.path.isdir(os.path.join(real, ".phalanx")) or any(_inside(h, real) for h in hidden)


def _inside(path: str, folder: str) -> bool:
    folder = folder.rstrip(os.sep) or os.sep
    return path == folder or path.startswith(folder if folder == os.sep else folder + os.sep)


def _under_system(path: str) -> bool:
    real = os.path.realpath(path)
    return any(_inside(real, os.path.realpath(d)) for d in SYSTEM_DIRS if os.path.exists(d))
