# The two commands a newcomer needs: `make demo` and `make test`. Both create and fill .venv first when it is
# missing or stale (pyproject.toml or the constraints changed), and skip that on a second run. `make test-fast` is
# `make test` without the tests marked slow (real servers, the stack, the browser, Ray clusters, whole flows).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PY ?= python3
# pip prints a warning per package for local mirror folders that do not exist; drop those lines only.
QUIET := 2>&1 | { grep -v "is ignored" || true; }
VENV := .venv
BIN := $(VENV)/bin
# CPU torch (no CUDA packages) unless this machine has an NVIDIA driver; override with TORCH=cpu|cuda.
TORCH ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo cuda || echo cpu)
# torch and torchvision at the tested releases: the CPU build or PyPI's CUDA build (deploy/Dockerfile uses the latter).
CONSTRAINTS := -c constraints.txt -c constraints-$(TORCH).txt
STAMP := $(VENV)/.installed-$(TORCH)
# Prefect's embedded (ephemeral) API keeps its database here; its telemetry locks that SQLite file otherwise.
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 300

.PHONY: install demo ablation test test-fast lint bench clean

$(STAMP): pyproject.toml constraints.txt constraints-cpu.txt constraints-cuda.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=25" $(QUIET)
	$(BIN)/python -m pip install -q $(CONSTRAINTS) -e '.[dev]' $(QUIET)
	$(BIN)/python -c "import torch, ray, prefect, mlflow, transformers, faiss, s3fs"
	$(BIN)/python -m infra.torchvision_shim
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/emt demo $(ARGS)

ablation: $(STAMP)
	$(BIN)/emt ablation --demo $(ARGS)

test: $(STAMP)
	@test -x /usr/bin/chromium || echo "make test: no Chromium, so tests/deploy/test_browser.py will fail;" \
		"install it with: sudo apt-get install -y chromium (bash .ci/run does)" >&2
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# -m replaces pyproject's `-m 'not gpu'`, so this expression keeps both exclusions.
test-fast: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) data bench/out
