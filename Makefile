# make run   installs what is missing (Debian packages, .venv) and starts the app
# make test  installs what is missing (plus test tools and Chromium), lints, and runs pytest
# make lint  ruff: a small set of bug-finding rules (pyproject.toml [tool.ruff]); no formatter
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test lint deps test-deps apt apt-dev bench clean

run: apt deps
	$(PY) app.py $(ARGS)

test: apt apt-dev lint
	$(PY) -m pytest $(PYTEST_ARGS)

lint: test-deps
	$(PY) -m ruff check .

bench: apt deps
	$(PY) benchmarks/bench.py $(ARGS)

apt:
	@bash scripts/ensure-apt.sh packages.txt

apt-dev:
	@bash scripts/ensure-apt.sh packages-dev.txt

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# --no-compile: Python compiles a module the first time it is imported; compiling every file of
# torch, gradio and the rest at install time cost about a minute that nothing used
$(VENV)/.deps: requirements.txt requirements-landmarks.txt | $(VENV)/bin/python
	$(PY) -m pip install -q --no-compile -r requirements.txt
	$(PY) -m pip install -q --no-compile --no-deps -r requirements-landmarks.txt
	touch $@

$(VENV)/.test-deps: requirements-dev.txt $(VENV)/.deps
	$(PY) -m pip install -q --no-compile -r requirements-dev.txt
	touch $@

deps: $(VENV)/.deps
test-deps: $(VENV)/.test-deps

clean:
	rm -rf $(VENV) .pytest_cache
