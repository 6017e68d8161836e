# Two commands do all the set-up on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Both create the virtual environment on first use. Override PYTHON or TORCH_SPEC as needed, e.g.
#   make test TORCH_SPEC="torch==2.13.0"   (the default pins the CPU build available on this project's machines)

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench venv clean

venv: $(STAMP)

# torch first and pinned: a bare `torch` requirement would pull several GB of CUDA wheels on a CPU machine.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,ray]"
	touch $(STAMP)

# The main job: the quick sweep on CPU (every model on copy and adding at T=10 and 40, 2 seeds) and its report.
demo: $(STAMP)
	$(VENV)/bin/seqbench sweep quick --out results
	$(VENV)/bin/seqbench report results/quick

test: $(STAMP)
	$(PY) -m pytest -q tests --benchmark-disable

bench: $(STAMP)
	$(PY) -m pytest -q tests/benchmarks --benchmark-only --benchmark-columns=min,median,iqr,rounds

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
