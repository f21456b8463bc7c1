"""Secrets never reach the journal, logs, outputs, reports or dashboards.

Providers register the keys they use; values of environment variables whose names look
secret (``*_API_KEY``, ``*_TOKEN``, ``*_SECRET``, ``*PASSWORD*``) are known too. ``redact``
replaces every known secret, and anything shaped like an API key or a bearer token, with
``[redacted]``. It is applied to provider errors, to every recorded error message and
answer, and (through :class:`RedactingFilter`) to the SDKs' debug logs.
"""

from __future__ import annotations

import logging
import os
import re

__all__ = ["RedactingFilter", "install_log_filter", "looks_secret", "redact", "register"]

MIN_LENGTH = 8  # shorter values are too likely to be ordinary words
_SECRET_NAME = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD)", re.IGNORECASE)
_KEYLIKE = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}|(?<=Bearer )[^\s\"',;]+")
_registered: set[str] = set()
_LOGGERS = ("anthropic", "openai", "httpx", "httpx2", "httpcore", "httpcore2", "")


def looks_secret(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


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
        _secret_names[:] = [k for k in os.environ if looks_secret(k)]
    values = (os.environ.get(k, "") for k in _secret_names)
    return {v for v in values if len(v) >= MIN_LENGTH}


def _known() -> list[str]:
    return sorted(_registered | _env_secrets(), key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every known secret and key-shaped string replaced by ``[redacted]``."""
    if not text:
        return text
    for secret in _known():
        if secret in text:
            text = text.replace(secret, "[redacted]")
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
    """Redact what the SDKs (and anything else) log through these loggers' handlers."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):
            if not any(isinstance(f, RedactingFilter) for f in target.filters):
                target.addFilter(RedactingFilter())
