# The two commands of the README: `make demo` (main job) and `make test` (the whole suite).
# Each one sets up .venv first. The CPU build of torch goes in before anything else can pull
# torch in, because letting pip choose torch freely downloads several GB of CUDA packages:
# .ci/install-torch takes it from PyTorch's CPU wheel index where that answers, and by name
# otherwise (override with TORCH_SPEC=... and TORCH_INDEX=...).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
export TORCH_SPEC

.PHONY: install demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	bash .ci/install-torch $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: install
	$(BIN)/sssl demo --out runs/demo

test: install
	$(BIN)/python -m pytest -q --durations=15 tests

lint: install
	$(BIN)/ruff format --check . && $(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/run --quick

clean:
	rm -rf runs data out
