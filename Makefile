# The README's two set-up commands: `make demo` (install + run the main job on the bundled
# sample) and `make test` (install + run the test suite). Both work offline from PyPI mirrors.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 resolves to the local CPU wheel here; plain `torch` would pull GBs of CUDA packages.
TORCH ?= torch==2.13.0

.PHONY: install demo test
install: $(BIN)/posepipe

$(BIN)/posepipe: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(BIN)/posepipe

demo: install
	$(BIN)/posepipe demo --output out/demo

test: install
	$(BIN)/python -m pytest -p no:cacheprovider

.PHONY: gpu-prepare gpu-dry-run
# The prepared GPU run: what travels to the GPU machine (.gpu/, checked against the device tool's
# 64 MiB), and the whole run on this CPU in Python 3.12 with only the GPU image's packages (.venv-gpu/).
gpu-prepare:
	bash infra/gpu/prepare.sh
gpu-dry-run:
	bash infra/gpu/dry_run.sh
