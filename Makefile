# Two commands do all the set-up:  `make demo`  and  `make test`.
# Each creates .venv when it is missing and installs the package with what it needs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.synthgen-installed
# two test processes (more on bigger machines, at most 4): the suite waits on child processes,
# Qt and disk much of the time, so two share a 2-core machine well (docs/testing.md)
PYTEST_ARGS ?= -n auto --maxprocesses 4
export HF_HUB_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test env sysdeps lint bench clean docs

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing napari-synthgen and its dependencies into $(VENV) (first time: a few minutes)"
	@$(PY) -m pip install -q -e ".[testing]" 2>&1 | { grep -v '^WARNING: Location' || true; }
	@touch $(STAMP)

env: $(STAMP)

# Xvfb and the X/GL libraries Qt needs to draw napari's canvas headless (apt-get when missing).
sysdeps:
	@bash scripts/ensure-sysdeps.sh

test: env sysdeps
	@$(VENV)/bin/ruff check src tests benchmarks examples scripts
	@mkdir -p .xdg-runtime && chmod 700 .xdg-runtime
	XDG_RUNTIME_DIR=$(CURDIR)/.xdg-runtime QT_QPA_PLATFORM=xcb \
	  $(PY) -m pytest -q --junitxml=.pytest-results.xml $(PYTEST_ARGS)

demo: env
	@if [ -z "$${DISPLAY:-}$${WAYLAND_DISPLAY:-}" ] && [ "$$(uname)" = Linux ]; then \
	  echo "No display found. On a headless machine run:"; \
	  echo "  bash scripts/ensure-sysdeps.sh && xvfb-run -a $(VENV)/bin/napari-synthgen demo --screenshot demo.png"; \
	  exit 1; fi
	$(VENV)/bin/napari-synthgen demo

# Regenerate docs/images/ (screenshots of real napari viewers, report and evaluate figures)
# under Xvfb, then check every link and command in the README and docs.
docs: env sysdeps
	@mkdir -p .xdg-runtime && chmod 700 .xdg-runtime
	XDG_RUNTIME_DIR=$(CURDIR)/.xdg-runtime QT_QPA_PLATFORM=xcb \
	  xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) scripts/make_docs.py
	$(PY) -m pytest -q -p no:xvfb tests/test_docs.py

lint: env
	$(VENV)/bin/ruff check src tests benchmarks examples scripts

bench: env
	$(PY) benchmarks/synthesis.py
	$(PY) benchmarks/training.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .xdg-runtime .pytest-results.xml
