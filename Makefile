# The README's two set-up commands: `make demo` (install + run the main job on the bundled
# sample) and `make test` (install + run the test suite). Both work offline from PyPI mirrors.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 resolves to the local CPU wheel here; plain `torch` would pull GBs of CUDA packages.
# TORCH is pip's words as given, unquoted, so an index URL passes through:
#   make install TORCH="torch --index-url https://download.pytorch.org/whl/cpu"        (CPU, any machine)
#   make install-gpu   (the cluster image's CUDA 12.8 build, TORCH_GPU)
TORCH ?= torch==2.13.0
TORCH_GPU ?= torch==2.11.0 --index-url https://download.pytorch.org/whl/cu128

.PHONY: install install-gpu demo test FORCE
install: $(BIN)/posepipe

install-gpu:
	$(MAKE) install TORCH="$(TORCH_GPU)"

# The TORCH a venv was made with is kept beside it: another TORCH (the CUDA build after the CPU one)
# reinstalls instead of finding the venv up to date.
$(VENV)/.torch: FORCE
	@mkdir -p $(VENV)
	@echo '$(TORCH)' | cmp -s - $@ || echo '$(TORCH)' > $@

$(BIN)/posepipe: pyproject.toml $(VENV)/.torch
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
