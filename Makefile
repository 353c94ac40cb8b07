# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test demo bench lint typecheck clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, with an exact pin: any other spec would pull a CUDA build here.
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[all,test]" "$(TORCH_SPEC)"
	# the [bench] extra without its stale metadata pins (requests~=2.25.1, torchvision; see pyproject.toml)
	$(BIN)/python -m pip install --quiet --no-deps "torchattacks==3.5.1"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS)

demo: install
	$(BIN)/torchshield demo --out demo-output

bench: install
	$(BIN)/python benchmarks/run_all.py

lint: install
	$(BIN)/python -m ruff check src tests benchmarks

# The security-critical packages are type-checked (settings in pyproject.toml, [tool.mypy]).
typecheck: install
	$(BIN)/python -m mypy

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache demo-output
