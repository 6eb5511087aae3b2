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

# Where torch (the version pinned in constraints.txt) comes from. Empty: plain pip, i.e. PyPI (a CUDA
# build on Linux) or a wheel pip's own configuration finds first (on the project's CPU machines, a CPU
# wheel on disk). A CPU-only machine: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu; a GPU
# machine: empty (PyPI's default CUDA build) or https://download.pytorch.org/whl/cu128 for another CUDA.
TORCH_INDEX_URL ?=
TORCH_SOURCE := $(VENV)/.torch-index-url
TORCH_PIP_ARGS := $(if $(strip $(TORCH_INDEX_URL)),--index-url $(strip $(TORCH_INDEX_URL)))

.PHONY: setup test test-fast demo bench clean-runs FORCE

setup: $(STAMP)

# Records TORCH_INDEX_URL; when it changes, torch is uninstalled and this file rewritten, so $(STAMP)
# installs torch again from the new index. An install made before this file existed used plain pip.
$(TORCH_SOURCE): FORCE
	@if [ "$$(cat $@ 2>/dev/null)" != "$(strip $(TORCH_INDEX_URL))" ]; then \
		if [ -x $(PY) ]; then \
			echo "TORCH_INDEX_URL changed to '$(strip $(TORCH_INDEX_URL))': reinstalling torch"; \
			$(PY) -m pip uninstall -q -y torch > /dev/null 2>&1 || true; \
		fi; \
		mkdir -p $(VENV) && printf '%s\n' "$(strip $(TORCH_INDEX_URL))" > $@; \
	elif [ ! -f $@ ]; then \
		mkdir -p $(VENV) && : > $@ && if [ -f $(STAMP) ]; then touch -r $(STAMP) $@; fi; \
	fi

# torch first, pinned by constraints.txt and from TORCH_INDEX_URL, so that no resolver picks another build.
$(STAMP): pyproject.toml constraints.txt $(TORCH_SOURCE)
	@mkdir -p $(RUNS)/logs
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) (log: $(RUNS)/logs/install.log) ..."
	@$(PY) -m pip install -q -c constraints.txt $(TORCH_PIP_ARGS) torch==2.13.0 > $(RUNS)/logs/install.log 2>&1 \
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
