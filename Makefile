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

# uv installs the same pinned versions as pip, downloading in parallel: everything in 27 s against
# pip's 103 s on a fresh machine. Like pip with --no-compile, it leaves Python to compile each module
# the first time it is imported (compiling all of torch and gradio up front cost a minute)
INSTALL := $(PY) -m uv pip install --python $(PY) -q

$(VENV)/.uv: | $(VENV)/bin/python
	$(PY) -m pip install -q uv
	touch $@

$(VENV)/.deps: requirements.txt requirements-landmarks.txt | $(VENV)/.uv
	$(INSTALL) -r requirements.txt
	$(INSTALL) --no-deps -r requirements-landmarks.txt
	touch $@

$(VENV)/.test-deps: requirements-dev.txt $(VENV)/.deps
	$(INSTALL) -r requirements-dev.txt
	touch $@

deps: $(VENV)/.deps
test-deps: $(VENV)/.test-deps

clean:
	rm -rf $(VENV) .pytest_cache
