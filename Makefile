# mimovl: `make demo` runs the main job on the tiny profile, `make test` runs the test suite.
# Both set up .venv themselves (idempotent: a second call skips the install).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUNS := runs
export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TORCH_EXTENSIONS_DIR := $(CURDIR)/$(RUNS)/torch_extensions

.PHONY: setup test test-fast demo bench clean-runs

setup: $(STAMP)

# torch first, from the CPU wheel pinned in constraints.txt, so that no resolver pulls a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	@mkdir -p $(RUNS)/logs
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) (log: $(RUNS)/logs/install.log) ..."
	@$(PY) -m pip install -q -c constraints.txt torch==2.13.0 > $(RUNS)/logs/install.log 2>&1 \
		|| { tail -30 $(RUNS)/logs/install.log; exit 1; }
	@$(PY) -m pip install -q -c constraints.txt -e '.[dev]' >> $(RUNS)/logs/install.log 2>&1 \
		|| { tail -30 $(RUNS)/logs/install.log; exit 1; }
	@$(PY) -m pip check >> $(RUNS)/logs/install.log 2>&1 || { tail -30 $(RUNS)/logs/install.log; exit 1; }
	@touch $(STAMP)
	@echo "installed."

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

demo: setup
	$(PY) -m flows.demo

bench: setup
	$(PY) -m bench.packing
	$(PY) -m bench.rewards
	$(PY) -m bench.trainer_overhead
	$(PY) -m bench.pipeline_overhead

clean-runs:
	rm -rf $(RUNS)

# demo-services, stop, services-status
include mk/services.mk
