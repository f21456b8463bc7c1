"""The one redaction: registered keys, secret-looking environment variables, key shapes."""

from __future__ import annotations

import logging

import pytest

from phalanx.redaction import RedactingFilter, redact, register


def test_environment_secrets_are_redacted_even_when_they_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-first-value-123")
    assert redact("x tok-first-value-123 y") == "x [redacted] y"
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-second-value-456")  # same name, new value
    assert redact("tok-second-value-456") == "[redacted]"
    monkeypatch.setenv("ANOTHER_API_KEY", "brand-new-key-789")  # a new name
    assert redact("brand-new-key-789!") == "[redacted]!"
    monkeypatch.setenv("HARMLESS", "not-a-secret-value")
    assert redact("not-a-secret-value") == "not-a-secret-value"


def test_registered_and_key_shaped_strings() -> None:
    register("custom-secret-value-1")
    assert redact("a custom-secret-value-1 b") == "a [redacted] b"
    assert redact("Authorization: Bearer abc.def-ghi") == "Authorization: Bearer [redacted]"
    assert redact("key sk-ant-api03-abcdefghijkl") == "key [redacted]"
    assert redact("short") == "short"


def test_log_filter_redacts_formatted_messages() -> None:
    register("log-secret-value-42")
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "sent %s", ("log-secret-value-42",), None
    )
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "sent [redacted]"
