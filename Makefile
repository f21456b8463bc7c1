# One command for local work and CI. Everything the tests and the demo need is installed here.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRAS ?= dev,local,anthropic,openai,web,otel,ray
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help venv sysdeps test lint typecheck unit demo bench clean

help:
	@echo "make demo   - set up and run the example plan with live status"
	@echo "make test   - set up, lint, type-check and run every test"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "installing phalanx[$(EXTRAS)] (llama-cpp-python compiles the first time: ~10 min)"
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests use: headless Chromium (dashboard and report tests, driven by
# Playwright with executable_path=/usr/bin/chromium; no browser is ever downloaded) and
# espeak-ng (tts audio). Installed only when missing.
sysdeps:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v espeak-ng >/dev/null 2>&1; then \
		echo "installing chromium and espeak-ng with apt-get"; \
		$(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -q \
			chromium chromium-driver espeak-ng; \
	fi

LINTED := src tests $(wildcard bench)

lint: venv
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

typecheck: venv
	$(VENV)/bin/mypy

unit: venv sysdeps
	$(VENV)/bin/pytest

test: lint typecheck unit

demo: venv
	$(VENV)/bin/phalanx run examples/feature-team.yaml

# Every benchmark against its baseline; writes docs/benchmarks.md and docs/benchmarks.json.
bench: venv
	$(PY) -m bench

clean:
	rm -rf $(VENV) .phalanx .mypy_cache .ruff_cache .pytest_cache
