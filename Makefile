# Set-up, lint, tests and the demo. `make demo` and `make test` are all a fresh machine needs.
#
# torch is pinned to exactly 2.13.0. The CPU wheel in /opt/wheels is used when present (the
# index's default Linux build pulls GBs of CUDA); without it the spec falls back to plain
# `torch==2.13.0` from the index, as `pip install torch==2.13.0` would.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
WHEELS := /opt/wheels
EXTRAS := dev,sklearn,torch,onnx,lightning,transformers,xgboost,lightgbm,catboost,keras

ifneq ($(wildcard $(WHEELS)/torch-2.13.0+cpu-*.whl),)
TORCH := --find-links $(WHEELS) "torch==2.13.0+cpu"
else
TORCH := "torch==2.13.0"
endif

STAMP := $(VENV)/.modelpack-installed
TYPECHECK := build/typecheck

# Tests start many Python processes: let them read and write cached bytecode even where the
# environment says otherwise (this machine sets PYTHONDONTWRITEBYTECODE, so every process would
# recompile pandas, sklearn and torch from source).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: venv lint test demo clean

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(UV): | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv

# A default editable install: setuptools' import hook maps modelpack.flavors/servers/deployers
# to the top-level folders, from inside the repo too, and sees files added later.
$(STAMP): pyproject.toml | $(UV)
	$(UV) pip install --python $(BIN)/python $(TORCH) -e ".[$(EXTRAS)]" --reinstall-package modelpack
	touch $@

# mypy cannot follow the editable import hook, so it checks a link tree shaped like the installed
# package (modelpack/flavors -> flavors/ ...), rebuilt on every run so new files are seen.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)
	cp -rs $(CURDIR)/modelpack $(TYPECHECK)/modelpack
	for d in flavors servers deployers; do cp -rs $(CURDIR)/$$d $(TYPECHECK)/modelpack/$$d; done
	cd $(TYPECHECK) && MYPYPATH=. $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml \
		--cache-dir $(CURDIR)/.mypy_cache $$(find modelpack -name '*.py' | LC_ALL=C sort)
	MYPYPATH=$(TYPECHECK) $(BIN)/mypy --explicit-package-bases tests examples

# pytest exits 5 when it collects no test: not a failure while the suite is being written.
test: lint
	@$(BIN)/pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

demo: venv
	$(BIN)/python examples/quickstart.py

clean:
	rm -rf build dist .mypy_cache .ruff_cache .pytest_cache $(STAMP)
