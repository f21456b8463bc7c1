"""The workspace sandbox: every file a tool touches lies inside one directory.

A :class:`Workspace` holds a root directory, resolved once (``realpath``) when it is made.
Every path a tool passes is relative to that root and goes through two gates:

1. **Lexical checks**, before any I/O. Refused: NUL bytes, absolute paths, backslashes,
   text that cannot be a file name (lone surrogates), paths over 4096 bytes or with a
   component over 255 bytes, components that NFKC-normalise to ``.``/``..`` or hold a slash
   (``．．``, ``‥``, ``／``), and any ``..`` that climbs above the root once the path is
   normalised lexically (``a/../../x``). ``.`` and empty components are dropped, so
   ``./a//b/`` is ``a/b``. Percent-encoded names (``%2e%2e``) are not decoded: they are
   literal names, inside the root like any other.
2. **A walk that never follows a symlink.** The root is opened (and checked to be the same
   directory it was), then each directory component is opened with
   ``O_NOFOLLOW | O_DIRECTORY`` relative to its parent's descriptor, and the final file with
   ``O_NOFOLLOW``. A symlink anywhere on the path is refused, even one swapped in between
   the checks and the open: the kernel refuses it at the moment of the open, so there is
   no window to race (no TOCTOU).

Policy: **every symlink is refused**, including one that points inside the workspace. That
is the simplest rule that is safe by construction; listing shows symlinks (marked ``@``)
but never follows them. Writes go to a temporary file in the same directory (opened by
descriptor) and are renamed over the target, so a write never follows a link, never
writes through a hard link into a file outside, and a reader never sees half a file.

Known limits: a hard link made by a command (``ln /outside/f x``) can be read through, as
with any tool that reads files (writing replaces the link, it never writes through it); a
mount point inside the root is crossed like a directory; Python's ``re`` has no timeout,
so :meth:`Workspace.search` bounds the work (files, bytes, line length, matches) instead.

Every refusal of a path by these rules has the code ``path_outside_workspace``.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import re
import secrets
import stat
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..exceptions import ToolError, UsageError

__all__ = [
    "Listing",
    "SearchHit",
    "SearchResult",
    "ToolError",
    "Workspace",
]

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
MAX_DEPTH = 64  # recursion limit for list/search
MAX_LINE_CHARS = 10_000  # search matches at most this much of one line
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv"})
"""Directories a *recursive* list or a search does not enter (name them to look inside)."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OUTSIDE = "path_outside_workspace"


@dataclass(frozen=True, kw_only=True, slots=True)
class Listing:
    """Entries under a directory, relative to the workspace root: directories end with
    ``/``, symlinks (never followed) with ``@``."""

    entries: tuple[str, ...]
    truncated: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class SearchHit:
    path: str
    line: int  # 1-based
    text: str  # the line, stripped and cut to 300 characters


@dataclass(frozen=True, kw_only=True, slots=True)
class SearchResult:
    hits: tuple[SearchHit, ...]
    truncated: bool  # a bound (matches, files) stopped the search early


# ------------------------------------------------------------------------ lexical checks


def _split(path: object) -> tuple[str, ...]:
    """The normalised components of ``path``; raises ``path_outside_workspace``."""
    if not isinstance(path, str):
        raise ToolError("bad_arguments", f"path must be a string, not {type(path).__name__}")
    shown = _shown(path)
    if "\x00" in path:
        raise ToolError(_OUTSIDE, f"NUL byte in path {shown}")
    try:
        size = len(path.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        raise ToolError(_OUTSIDE, f"path {shown} is not valid text") from None
    if size > MAX_PATH_BYTES:
        raise ToolError(_OUTSIDE, f"path is too long ({size} bytes; limit {MAX_PATH_BYTES})")
    if path.startswith("/"):
        raise ToolError(_OUTSIDE, f"absolute path {shown}: use a path relative to the workspace")
    if "\\" in path:
        raise ToolError(_OUTSIDE, f"backslash in path {shown}: separate components with '/'")
    return _normalise(path.split("/"), shown)


def _normalise(raw: list[str], shown: str) -> tuple[str, ...]:
    parts: list[str] = []
    for name in raw:
        _check_name(name, shown)
        if name in ("", "."):
            continue
        if name == "..":
            if not parts:
                raise ToolError(_OUTSIDE, f"path {shown} leads outside the workspace")
            parts.pop()
        else:
            parts.append(name)
    return tuple(parts)


def _check_name(name: str, shown: str) -> None:
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise ToolError(_OUTSIDE, f"a component of {shown} is over {MAX_NAME_BYTES} bytes")
    if name in ("", ".", ".."):
        return
    folded = unicodedata.normalize("NFKC", name)
    if folded in (".", "..") or "/" in folded or "\\" in folded:
        raise ToolError(_OUTSIDE, f"component {_shown(name)} of {shown} looks like '{folded}'")


def _shown(path: str, limit: int = 120) -> str:
    text = ascii(path)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _display(parts: tuple[str, ...]) -> str:
    return "/".join(parts) or "."


# ------------------------------------------------------------------------ error mapping


def _os_error(exc: OSError, where: str) -> ToolError:
    if exc.errno == errno.ELOOP:
        return ToolError(_OUTSIDE, f"{where}: symlinks are refused in the workspace")
    if exc.errno == errno.ENOENT:
        return ToolError("not_found", f"{where}: no such file or directory")
    if exc.errno == errno.ENOTDIR:
        return ToolError("not_a_directory", f"{where}: a component is not a directory")
    if exc.errno == errno.EISDIR:
        return ToolError("not_a_file", f"{where}: is a directory")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ToolError("permission_denied", f"{where}: permission denied")
    if exc.errno == errno.ENAMETOOLONG:
        return ToolError(_OUTSIDE, f"{where}: name too long")
    return ToolError("io_error", f"{where}: {exc.strerror or exc}")


def _link_or_dir_at(dir_fd: int, name: str) -> bool:
    try:
        mode = os.lstat(name, dir_fd=dir_fd).st_mode
    except OSError:
        return False
    return stat.S_ISLNK(mode) or stat.S_ISDIR(mode)


# ------------------------------------------------------------------------ the workspace


class Workspace:
    """A directory that tools may read and write; nothing outside it is reachable.

    ``root`` is resolved once. ``max_file_bytes`` bounds a read, a write and the files a
    search looks into; ``max_entries`` and ``max_matches`` bound list and search.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        create: bool = False,
        max_file_bytes: int = 10 * 1024 * 1024,
        max_entries: int = 1000,
        max_matches: int = 200,
        max_files_searched: int = 10_000,
    ) -> None:
        if create:
            os.makedirs(root, exist_ok=True)
        real = os.path.realpath(root)
        try:
            st = os.stat(real)
        except OSError as exc:
            raise UsageError(f"workspace {root}: {exc.strerror or exc}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise UsageError(f"workspace {root}: not a directory")
        self.root = Path(real)
        self._identity = (st.st_dev, st.st_ino)
        self.max_file_bytes = max_file_bytes
        self.max_entries = max_entries
        self.max_matches = max_matches
        self.max_files_searched = max_files_searched

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    def display(self, path: str) -> str:
        """``path`` normalised and checked, relative to the root (``"."`` for the root)."""
        return _display(_split(path))

    # ---------------------------------------------------------------- safe opening

    def _open_root(self) -> int:
        try:
            fd = os.open(self.root, _DIR_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise ToolError(_OUTSIDE, "the workspace root was replaced") from None
            raise _os_error(exc, "workspace root") from None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != self._identity:
            os.close(fd)
            raise ToolError(_OUTSIDE, "the workspace root was replaced")
        return fd

    def _open_dir(self, parts: tuple[str, ...], *, create: bool = False) -> int:
        """A descriptor for the directory ``parts`` (the caller closes it)."""
        fd = self._open_root()
        try:
            for i, name in enumerate(parts):
                if create:
                    _mkdir_at(fd, name)
                nfd = _open_subdir(fd, name, _display(parts[: i + 1]))
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _parent(self, path: str) -> tuple[tuple[str, ...], int]:
        """Components of a file path and a descriptor for its parent directory."""
        parts = _split(path)
        if not parts:
            raise ToolError("not_a_file", "'.' is the workspace directory, not a file")
        return parts, self._open_dir(parts[:-1])

    # ---------------------------------------------------------------- operations

    def read_bytes(self, path: str, max_bytes: int | None = None) -> bytes:
        """The bytes of a regular file inside the workspace."""
        parts, dir_fd = self._parent(path)
        try:
            return _read_at(dir_fd, parts[-1], _display(parts), max_bytes or self.max_file_bytes)
        finally:
            os.close(dir_fd)

    def read_text(self, path: str, max_bytes: int | None = None) -> str:
        """A UTF-8 text file inside the workspace (``not_text`` for anything else)."""
        return _decode(self.read_bytes(path, max_bytes), self.display(path))

    def write_text(self, path: str, text: str) -> int:
        """Write ``text`` (UTF-8) atomically, creating parent directories; returns bytes."""
        parts = _split(path)
        if not parts:
            raise ToolError("not_a_file", "'.' is the workspace directory, not a file")
        data = _encode(text)
        if len(data) > self.max_file_bytes:
            raise ToolError("too_large", f"{len(data)} bytes; limit {self.max_file_bytes}")
        dir_fd = self._open_dir(parts[:-1], create=True)
        try:
            _write_at(dir_fd, parts[-1], _display(parts), data)
        finally:
            os.close(dir_fd)
        return len(data)

    def edit(self, path: str, old: str, new: str) -> None:
        """Replace the one occurrence of ``old`` with ``new`` (exact text, no patterns)."""
        if not old:
            raise ToolError("bad_arguments", "old must not be empty")
        parts, dir_fd = self._parent(path)
        shown = _display(parts)
        try:
            text = _decode(_read_at(dir_fd, parts[-1], shown, self.max_file_bytes), shown)
            data = _encode(_replace_once(text, old, new, shown))
            if len(data) > self.max_file_bytes:
                raise ToolError("too_large", f"{len(data)} bytes; limit {self.max_file_bytes}")
            _write_at(dir_fd, parts[-1], shown, data)
        finally:
            os.close(dir_fd)

    def list(
        self,
        path: str = ".",
        pattern: str = "*",
        *,
        recursive: bool = False,
        max_entries: int | None = None,
    ) -> Listing:
        """Entries of a directory whose name (or relative path, if ``pattern`` holds a
        ``/``) matches the glob ``pattern``; sorted, symlinks shown but not followed."""
        parts = _split(path)
        limit = max_entries or self.max_entries
        found: list[str] = []
        dir_fd = self._open_dir(parts)
        try:
            for rel, kind in _walk(dir_fd, parts, recursive=recursive):
                if _glob_match(rel, pattern):
                    if len(found) >= limit:
                        return Listing(entries=tuple(found), truncated=True)
                    found.append(rel + {"dir": "/", "link": "@"}.get(kind, ""))
        finally:
            os.close(dir_fd)
        return Listing(entries=tuple(found), truncated=False)

    def search(self, pattern: str, path: str = ".", max_matches: int | None = None) -> SearchResult:
        """Lines matching the Python regex ``pattern`` in text files under ``path`` (a file
        or a directory). Binary files (a NUL in the first 8 KiB) and files over
        ``max_file_bytes`` are skipped; symlinks are never followed."""
        try:
            regex = re.compile(pattern)
        except (re.error, TypeError) as exc:
            raise ToolError("bad_arguments", f"bad regular expression: {exc}") from None
        parts = _split(path)
        searcher = _Searcher(regex, max_matches or self.max_matches, self)
        if parts and self._is_file(parts):
            searcher.search_file(parts, strict=True)
        else:
            dir_fd = self._open_dir(parts)
            try:
                searcher.search_dir(dir_fd, parts)
            finally:
                os.close(dir_fd)
        return SearchResult(hits=tuple(searcher.hits), truncated=searcher.truncated)

    def _is_file(self, parts: tuple[str, ...]) -> bool:
        dir_fd = self._open_dir(parts[:-1])
        try:
            st = os.lstat(parts[-1], dir_fd=dir_fd)
        except OSError as exc:
            raise _os_error(exc, _display(parts)) from None
        finally:
            os.close(dir_fd)
        if stat.S_ISLNK(st.st_mode):
            raise ToolError(_OUTSIDE, f"{_display(parts)}: symlinks are refused in the workspace")
        return stat.S_ISREG(st.st_mode)


# ------------------------------------------------------------------------ fd-level helpers


def _mkdir_at(dir_fd: int, name: str) -> None:
    try:
        os.mkdir(name, dir_fd=dir_fd)
    except FileExistsError:
        pass  # a directory (or a symlink/file, which the open that follows refuses)
    except OSError as exc:
        raise _os_error(exc, name) from None


def _open_subdir(dir_fd: int, name: str, where: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        # O_NOFOLLOW | O_DIRECTORY on a symlink fails with ENOTDIR. If the name is a link,
        # or a directory by now (it was swapped while we opened it), it was a symlink.
        if exc.errno == errno.ENOTDIR and _link_or_dir_at(dir_fd, name):
            raise ToolError(_OUTSIDE, f"{where}: symlinks are refused in the workspace") from None
        raise _os_error(exc, where) from None


def _open_file_at(dir_fd: int, name: str, where: str) -> tuple[int, os.stat_result]:
    """Open a regular file for reading, never following a symlink, never blocking on a FIFO."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise _os_error(exc, where) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ToolError("not_a_file", f"{where}: {kind}")
    return fd, st


def _read_at(dir_fd: int, name: str, where: str, max_bytes: int) -> bytes:
    fd, st = _open_file_at(dir_fd, name, where)
    try:
        if st.st_size > max_bytes:
            raise ToolError("too_large", f"{where}: {st.st_size} bytes; limit {max_bytes}")
        data = _read_fd(fd, max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # it grew while we read
        raise ToolError("too_large", f"{where}: over {max_bytes} bytes")
    return data


def _read_fd(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(1 << 20, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _write_at(dir_fd: int, name: str, where: str, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``name`` and rename it over ``name``."""
    mode = _existing_mode(dir_fd, name, where)
    temp = f".phalanx-{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(temp, _TEMP_FLAGS, 0o666, dir_fd=dir_fd)
    except OSError as exc:
        raise _os_error(exc, where) from None
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException as exc:
        _unlink_quietly(dir_fd, temp)
        if isinstance(exc, OSError):
            raise _os_error(exc, where) from None
        raise


def _existing_mode(dir_fd: int, name: str, where: str) -> int | None:
    """The permission bits of the file being replaced; refuses links and directories."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _os_error(exc, where) from None
    if stat.S_ISLNK(st.st_mode):
        raise ToolError(_OUTSIDE, f"{where}: symlinks are refused in the workspace")
    if not stat.S_ISREG(st.st_mode):
        raise ToolError("not_a_file", f"{where}: not a regular file")
    return stat.S_IMODE(st.st_mode)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unlink_quietly(dir_fd: int, name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError("not_text", f"{where}: not UTF-8 text") from None


def _encode(text: object) -> bytes:
    if not isinstance(text, str):
        raise ToolError("bad_arguments", f"content must be a string, not {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ToolError("bad_arguments", "content is not valid text (lone surrogates)") from None


def _replace_once(text: str, old: str, new: str, where: str) -> str:
    first = text.find(old)
    if first < 0:
        raise ToolError("edit_no_match", f"{where}: the text to replace was not found")
    if text.find(old, first + 1) >= 0:
        raise ToolError("edit_ambiguous", f"{where}: the text to replace occurs more than once")
    return text[:first] + new + text[first + len(old) :]


# ------------------------------------------------------------------------ walking


def _walk(
    dir_fd: int, parts: tuple[str, ...], *, recursive: bool, depth: int = 0
) -> Iterator[tuple[str, str]]:
    """``(relative path, kind)`` for entries under ``dir_fd``; kind is dir/file/link/other.
    Recursion opens each subdirectory by descriptor with ``O_NOFOLLOW``."""
    for name in sorted(os.listdir(dir_fd)):
        try:
            mode = os.lstat(name, dir_fd=dir_fd).st_mode
        except OSError:
            continue  # vanished meanwhile
        rel = _display((*parts, name))
        kind = _kind(mode)
        yield rel, kind
        if recursive and kind == "dir" and name not in SKIP_DIRS and depth < MAX_DEPTH:
            yield from _walk_sub(dir_fd, name, (*parts, name), depth + 1)


def _walk_sub(
    dir_fd: int, name: str, parts: tuple[str, ...], depth: int
) -> Iterator[tuple[str, str]]:
    try:
        sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return  # swapped for a symlink or removed meanwhile: not followed
    try:
        yield from _walk(sub, parts, recursive=True, depth=depth)
    finally:
        os.close(sub)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "link"
    return "file" if stat.S_ISREG(mode) else "other"


def _glob_match(rel: str, pattern: str) -> bool:
    if pattern in ("", "*"):
        return True
    if "/" in pattern:
        return fnmatch.fnmatchcase(rel, pattern)
    return fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], pattern)


class _Searcher:
    """Accumulates search hits within the workspace's bounds."""

    def __init__(self, regex: re.Pattern[str], max_matches: int, ws: Workspace) -> None:
        self.regex = regex
        self.max_matches = max_matches
        self.ws = ws
        self.hits: list[SearchHit] = []
        self.truncated = False
        self.files = 0

    def search_dir(self, dir_fd: int, parts: tuple[str, ...]) -> None:
        for rel, kind in _walk(dir_fd, parts, recursive=True):
            if self.truncated:
                return
            if kind == "file":
                self.search_file(tuple(rel.split("/")))

    def search_file(self, parts: tuple[str, ...], *, strict: bool = False) -> None:
        """Search one file; ``strict``: report a file that cannot be read, not skip it."""
        self.files += 1
        if self.files > self.ws.max_files_searched:
            self.truncated = True
            return
        data = self._load(parts, strict)
        if data is None or b"\x00" in data[:8192]:
            return
        rel = _display(parts)
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if self.regex.search(line[:MAX_LINE_CHARS]):
                if len(self.hits) >= self.max_matches:
                    self.truncated = True
                    return
                self.hits.append(SearchHit(path=rel, line=number, text=line.strip()[:300]))

    def _load(self, parts: tuple[str, ...], strict: bool) -> bytes | None:
        try:
            return self.ws.read_bytes(_display(parts))
        except ToolError:
            if strict:
                raise
            return None  # too large, swapped for a link, vanished: skipped
