# One command for local work and CI. Everything the tests and the demo need is installed here.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRAS ?= dev,local,anthropic,openai,web,otel,ray,mcp
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help venv sysdeps test lint typecheck unit demo bench clean lock test-lowest

help:
	@echo "make demo   - set up and run the example plan with live status"
	@echo "make test   - set up, lint, type-check and run every test"
	@echo "make lock   - move requirements/lock.txt to the newest allowed versions"
	@echo "make test-lowest - provider tests on the lowest versions the ranges allow"

# Every machine installs exactly the versions in requirements/lock.txt (all extras, every
# transitive package, resolved for Python 3.11+ on every platform). uv, itself pinned in the
# lock, installs them; `make lock` is the one deliberate way to move them.
LOCK       := requirements/lock.txt
BUILD_LOCK := requirements/build.txt
UV         := $(VENV)/bin/uv
UV_PIN      = $(shell grep -m1 '^uv==' $(LOCK))

$(STAMP): pyproject.toml $(LOCK) $(BUILD_LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check '$(UV_PIN)'
	@echo "installing the locked packages (llama-cpp-python compiles the first time: ~10 min)"
	$(UV) pip sync --quiet --compile-bytecode --python $(PY) --build-constraints $(BUILD_LOCK) $(LOCK)
	$(UV) pip install --quiet --python $(PY) --no-deps --build-constraints $(BUILD_LOCK) -e .
	@touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests use: headless Chromium (dashboard and report tests, driven by
# Playwright with executable_path=/usr/bin/chromium; no browser is ever downloaded) and
# espeak-ng (tts audio) and bubblewrap (bwrap: run_command's sandbox, tests/test_sandbox.py).
# Installed only when missing.
sysdeps:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v espeak-ng >/dev/null 2>&1 \
		|| ! command -v bwrap >/dev/null 2>&1; then \
		echo "installing chromium, espeak-ng and bubblewrap with apt-get"; \
		$(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -q \
			chromium chromium-driver espeak-ng bubblewrap; \
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

# Move the lock to the newest versions pyproject.toml allows, then run `make test`.
LOCK_FLAGS := --all-extras --universal --python-version 3.11 --no-header --quiet
lock: venv
	$(UV) pip compile pyproject.toml $(LOCK_FLAGS) --upgrade -o $(LOCK)
	$(UV) pip compile pyproject.toml -c $(LOCK) --universal --python-version 3.11 \
		--no-header --quiet -o requirements/core.txt
	$(UV) pip compile requirements/build.in --universal --python-version 3.11 --no-header \
		--quiet --upgrade -o $(BUILD_LOCK)
	@echo "lock refreshed: now run make test (and commit $(LOCK) when it passes)"

# The provider tests against the lowest versions pyproject.toml's ranges allow (the SDKs
# and httpx2 at their floors). Not in CI: run it before lowering or raising a floor.
LOWEST := .venv-lowest
test-lowest: venv
	@test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	$(UV) pip compile pyproject.toml --extra anthropic --extra openai --universal \
		--python-version 3.11 --resolution lowest-direct --no-header --quiet \
		-o $(LOWEST)/lock.txt
	$(UV) pip sync --quiet --python $(LOWEST)/bin/python $(LOWEST)/lock.txt
	$(UV) pip install --quiet --python $(LOWEST)/bin/python --no-deps -e .
	$(UV) pip install --quiet --python $(LOWEST)/bin/python -c $(LOCK) \
		pytest pytest-timeout hypothesis pyyaml
	$(LOWEST)/bin/python -c "import anthropic, openai, httpx2; \
		print('lowest:', anthropic.__version__, openai.__version__, httpx2.__version__)"
	$(LOWEST)/bin/pytest -q -p no:cacheprovider tests/test_providers_http.py \
		tests/test_stream_cut.py

clean:
	rm -rf $(VENV) $(LOWEST) .phalanx .mypy_cache .ruff_cache .pytest_cache
