# One entry point for users, developers and CI. Every target sets itself up first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
MPY    := $(VENV)/bin/micropython
PORT   ?= /dev/ttyACM0

.PHONY: deps run test bench clean

deps: $(VENV)/.stamp lib/.stamp

$(VENV)/.stamp: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

lib/.stamp: lib/lock.json tools/fetch_deps.py $(VENV)/.stamp
	$(PY) tools/fetch_deps.py

run: deps
	$(PY) tools/run_sim.py

test: deps
	$(PY) -m pytest -q tests

bench: deps
	$(PY) tools/bench.py

clean:
	rm -rf $(VENV) build bench.json .pytest_cache
	find lib -mindepth 1 ! -name lock.json ! -name README.md -exec rm -rf {} +
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
