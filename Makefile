# One entry point for users, developers and CI. Every target sets itself up first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
MPY    := $(VENV)/bin/micropython
PORT   ?= /dev/ttyACM0

.PHONY: deps run test bench clean flash deploy console package.json
FIRMWARE ?=
CONFIG ?=
DEPLOY_ARGS ?=

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

flash: deps
	$(if $(FIRMWARE),,$(error FIRMWARE=path/to/ESP32_GENERIC_S3-SPIRAM_OCT-....bin is required))
	$(PY) tools/flash.py flash --port $(PORT) --firmware $(FIRMWARE) $(if $(ERASE),--erase) $(if $(PARTITION_TABLE),--partition-table) $(FLASH_ARGS)

deploy: deps
	$(PY) tools/deploy.py deploy --port $(PORT) $(if $(CONFIG),--config $(CONFIG)) $(DEPLOY_ARGS)

console: deps
	$(PY) tools/deploy.py console --port $(PORT)

package.json: deps
	$(PY) tools/gen_package_json.py

clean:
	rm -rf $(VENV) build bench.json .pytest_cache
	find lib -mindepth 1 ! -name lock.json ! -name README.md -exec rm -rf {} +
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
