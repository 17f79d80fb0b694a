# One command each: make demo, make run, make test, make lint, make bench.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser demo run flower test lint format bench clean

# The browser test drives Debian's chromium (not a browser Playwright downloads: this machine
# reaches package registries only). Installed with apt when missing; a no-op when present.
CHROMIUM ?= /usr/bin/chromium
APT_PACKAGES := chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/imgbatch demo

run: $(STAMP)
	$(BIN)/imgbatch run

# Celery's dashboard for the stack `make run` started (found through .data/stack.json).
flower: $(STAMP)
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

test: $(STAMP) browser
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf .data $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
