# The two commands of the README: `make lab` and `make test`. Each sets up .venv first, idempotently.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8888
# torch: the CPU build. pip here finds it on local disk; elsewhere the CPU wheel index is the fallback,
# so a CPU machine never downloads a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: lab test setup setup-dev chromium unit notebooks browser bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)" \
	  || $(BIN)/pip install -q "$(TORCH_SPEC)" --index-url $(TORCH_CPU_INDEX) \
	  || $(BIN)/pip install -q torch --index-url $(TORCH_CPU_INDEX)
	touch $@

$(VENV)/.core: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.core
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.core
setup-dev: $(VENV)/.dev chromium

lab: setup
	@echo "Starting JupyterLab: open the URL printed below (notebooks/00_tour.ipynb)."
	$(BIN)/jupyter lab --no-browser --port=$(PORT) --ServerApp.root_dir=. \
	  $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) \
	  --LabApp.default_url=/lab/tree/notebooks/00_tour.ipynb

chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian chromium for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    || echo "WARNING: apt-get install chromium failed; the browser test will be skipped"; \
	else \
	  echo "NOTE: /usr/bin/chromium is missing and you are not root: run 'sudo apt-get install chromium' to enable the browser test (it is skipped otherwise)."; \
	fi

notebooks: setup-dev
	$(BIN)/python -m pytest -q --nbval-lax notebooks tests/test_notebook_budget.py

browser: setup-dev
	$(BIN)/python -m pytest -q tests/browser

# Tests run torch in several processes at once (pytest, notebook kernels, the browser's kernel): passive
# OpenMP waiting keeps idle threads from spinning on the 2 cores the others need.
unit notebooks browser test: export OMP_WAIT_POLICY = PASSIVE
# The README's test command explores the same hypothesis examples on every run, so CI cannot fail by luck;
# run pytest directly (default profile) to explore new random examples.
unit test: export HYPOTHESIS_PROFILE = ci

# The docstrings' examples of the core and the widgets run too (--doctest-modules); a module whose imports
# need a piece that is not installed is skipped (--doctest-ignore-import-errors), not failed.
DOCTESTS := --doctest-modules --doctest-ignore-import-errors workbench widgets

unit: setup-dev
	$(BIN)/python -m pytest -q tests/unit $(DOCTESTS)

# Unit tests, every notebook under nbval (lax: cells marked NBVAL_CHECK_OUTPUT are compared) plus its
# time/memory budget, the real-browser test, and the doctests.
test: setup-dev
	$(BIN)/python -m pytest -p no:cacheprovider --durations=15 --nbval-lax tests notebooks $(DOCTESTS)

bench: setup
	$(BIN)/python -m workbench.bench models

clean:
	rm -rf $(VENV) build *.egg-info
