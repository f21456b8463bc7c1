"""Secrets never reach the journal, logs, outputs, reports or dashboards.

Providers register the keys they use; the values of secret environment variables are
known too. ``redact`` replaces every known secret, and anything shaped like an API key or a
bearer token, with ``[redacted]``. It is applied to provider errors, to every recorded error
message and answer, and (through :class:`RedactingFilter`) to the SDKs' debug logs.

**The one secret rule** (:func:`is_secret`) decides, for redaction and for every child
process alike (``run_command``, command hooks, eval ``command`` checks, the claude-code
child), which environment variables are secret: a name that contains ``SECRET``,
``PASSW``, ``PASSPHRASE``, ``CREDENTIAL``, ``PRIVATE_KEY``, ``API_KEY``/``APIKEY`` or
``ACCESS_KEY`` or ``AUTH_CONFIG`` (``DOCKER_AUTH_CONFIG``), or ends in a word ``KEY``,
``TOKEN``, ``AUTH``, ``COOKIE``, ``DSN``, ``_PWD`` or ``_PASS`` (any case: ``STRIPE_KEY``,
``MYSQL_PWD``, ``SENTRY_DSN``; not the shell's ``PWD``); and any variable whose value is a
URL with a password (``postgres://user:pw@host/db``) or a connection string with one
(``Server=db;Password=pw``), whatever its name. ``redact`` also replaces the password of
any URL in a text (a plan's ``base_url``, an error line). :func:`scrubbed_env` is the
environment a child gets: without them, except the names it is explicitly given (``keep``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping

__all__ = [
    "RedactingFilter",
    "install_log_filter",
    "is_secret",
    "is_secret_name",
    "looks_secret",
    "redact",
    "register",
    "scrubbed_env",
    "secret_values",
    "url_password",
]

MIN_LENGTH = 8  # shorter values are too likely to be ordinary words
MIN_URL_PASSWORD = 4  # a URL's password is a password, however short
_SECRET_NAME = re.compile(
    r"SECRET|PASSW|PASSPHRASE|CREDENTIAL|PRIVATE_?KEY|API_?KEY|ACCESS_?KEY|AUTH_CONFIG"
    r"|(?:^|_)(?:KEY|TOKEN|AUTH|COOKIE|DSN)$|_(?:PWD|PASS)$",  # not PWD, the shell's cwd
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:([^/\s@]+)@")
# a URL's password anywhere in a text (a plan, an error line): postgres://user:PASSWORD@host
_URL_PASSWORD_IN_TEXT = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")
# a connection string's password: Server=db;Password=...; (ADO.NET, ODBC, JDBC properties)
_CONN_PASSWORD = re.compile(r"(?i)(?:^|;)\s*(?:password|pwd)\s*=\s*[^;\s]")
_KEYLIKE = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}|(?<=Bearer )[^\s\"',;]+")
_registered: set[str] = set()
_LOGGERS = ("anthropic", "openai", "httpx", "httpx2", "httpcore", "httpcore2")


def is_secret_name(name: str) -> bool:
    """Whether a variable's name marks it as a secret (the rule in the module docstring)."""
    return bool(_SECRET_NAME.search(name))


looks_secret = is_secret_name  # the name this module's users knew


def url_password(value: str) -> str | None:
    """The password of a URL such as ``postgres://user:pw@host/db`` (None for anything else)."""
    m = _URL_PASSWORD.match(value) if "://" in value and "@" in value else None
    return m.group(1) if m else None


def is_secret(name: str, value: str) -> bool:
    """The one rule: a secret name, or a value that is a URL with a password or a
    connection string with one (``Server=db;Password=...``)."""
    return (
        is_secret_name(name)
        or url_password(value) is not None
        or (";" in value and _CONN_PASSWORD.search(value) is not None)
    )


def scrubbed_env(
    env: Mapping[str, str] | None = None, *, keep: Iterable[str] = ()
) -> dict[str, str]:
    """The environment for a child process: ``env`` (default: this process's) without its
    secrets, except the names in ``keep`` (what a plan passes through on purpose)."""
    source = os.environ if env is None else env
    kept = frozenset(keep)
    return {k: v for k, v in source.items() if k in kept or not is_secret(k, v)}


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """The secret values of ``env`` (default: this process's), longest first: each secret
    variable's value and each URL's password, long enough not to be an ordinary word."""
    source = os.environ if env is None else env
    return sorted(_values_of(source, [k for k, v in source.items() if is_secret(k, v)]),
                  key=len, reverse=True)  # fmt: skip


def _values_of(env: Mapping[str, str], names: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for name in names:
        value = env.get(name, "")
        if len(value) >= MIN_LENGTH:
            out.add(value)
        password = url_password(value)
        if password is not None and len(password) >= MIN_URL_PASSWORD:
            out.add(password)
    return out


def register(secret: str | None) -> None:
    """Remember a secret so that :func:`redact` removes it everywhere."""
    if secret and len(secret) >= MIN_LENGTH:
        _registered.add(secret)


_secret_names: list[str] = []
_environ_names: frozenset[object] = frozenset()


def _env_secrets() -> set[str]:
    """Values of the secret-looking variables. Their names are found again only when the
    set of variable names changes (checked on the raw mapping: a fraction of a
    microsecond); their values are read every time (a few lookups)."""
    global _environ_names
    names = frozenset(getattr(os.environ, "_data", os.environ))
    if names != _environ_names:
        _environ_names = names
        _secret_names[:] = [k for k, v in os.environ.items() if is_secret(k, v)]
    return _values_of(os.environ, _secret_names)


def _known() -> list[str]:
    return sorted(_registered | _env_secrets(), key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every known secret and key-shaped string replaced by ``[redacted]``."""
    if not text:
        return text
    for secret in _known():
        if secret in text:
            text = text.replace(secret, "[redacted]")
    if "://" in text and "@" in text:  # a password in a URL, whoever wrote it there
        text = _URL_PASSWORD_IN_TEXT.sub(r"\1[redacted]@", text)
    if "sk-" not in text and "Bearer " not in text:  # both parts of _KEYLIKE need these
        return text
    return _KEYLIKE.sub("[redacted]", text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the formatted message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken log call is not ours to fix
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_log_filter() -> None:
    """Redact what the SDKs log (``ANTHROPIC_LOG``/``OPENAI_LOG``=debug print headers): the
    filter sits on each of their loggers, where the records are made, so it holds whichever
    handler prints them (the SDKs' debug mode configures the root logger's). The root logger
    and its handlers are the application's: never touched; ``phalanx -v``'s handlers carry
    the filter themselves."""
    loggers = logging.Logger.manager.loggerDict
    for name in [n for n in loggers if n in _LOGGERS or n.partition(".")[0] in _LOGGERS]:
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):
            if not any(isinstance(f, RedactingFilter) for f in target.filters):
                target.addFilter(RedactingFilter())
