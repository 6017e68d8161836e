# Two commands do all the set-up on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Both create the virtual environment on first use. Override PYTHON or TORCH_SPEC as needed, e.g.
#   make test TORCH_SPEC="torch==2.13.0"   (the default pins the CPU build available on this project's machines)

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-gpu gpu-prepare venv clean

venv: $(STAMP)

# torch first and pinned: a bare `torch` requirement would pull several GB of CUDA wheels on a CPU machine.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,ray,trackers,slurm]"
	touch $(STAMP)

# The main job: the quick sweep on CPU (every model on adding at T=10/100 and a short copy task at T=10/20, 3 seeds)
# and its report.
demo: $(STAMP)
	$(VENV)/bin/seqbench sweep quick --out results
	$(VENV)/bin/seqbench report results/quick

# The suite runs in parallel: one pytest process per core (pytest-xdist; TEST_WORKERS=1 runs it in one process). The
# tests of a file that share a module fixture (a Ray instance, a SLURM stand-in) stay in one process (tests/conftest.py).
TEST_WORKERS ?= auto
test: $(STAMP)
	$(PY) -m pytest -q tests --benchmark-disable -n $(TEST_WORKERS) --dist loadgroup

bench: $(STAMP)
	$(PY) -m pytest -q tests/benchmarks --benchmark-only --benchmark-columns=min,median,iqr,rounds

# The kernel benchmark on a GPU machine (H100/H200): torch.nn (cuDNN) vs the fused Triton kernels vs the reference
# loop, B=64, T=1024, H=64..512, float32 (torch's TF32 defaults) and bfloat16, JSON under results/bench/<gpu>/, then
# the compiled-kernel tests: scripts/gpu_session.sh's stages env, bench and kernels (logs and a tarball under gpu-out/),
# with this venv's Python where there is one, else the machine's python3 (a GPU image with torch and triton but no
# network; see `make gpu-prepare`). The rest (fp32 with TF32 off, minGRU/minLSTM, the harness on CUDA, step overhead,
# runs per hour, profiles) are the script's other stages.
bench-gpu:
	SEQBENCH_PYTHON=$$([ -x $(PY) ] && echo $(PY) || echo python3) BENCH_OUT=results/bench OUT=$${OUT:-gpu-out} \
		bash scripts/gpu_session.sh env bench kernels

# Before borrowing a GPU machine whose image lacks the harness's dependencies: wheels and the commit into .gpu/, to be
# carried with the call that runs scripts/gpu_session.sh there (README, "On a borrowed GPU machine").
gpu-prepare: $(STAMP)
	scripts/gpu_prepare.sh

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks .gpu gpu-out

# Issue 10: compile every kernel configuration for sm_90 and sm_80 with the installed Triton (no GPU needed), write
# results/bench/compile/sm<arch>-triton<version>.json and fail if any configuration plan() can choose does not fit.
# Run it under each supported Triton, then regenerate triton_split.LAUNCH_TABLE:
#   $(PY) -m seqbench.kernels.compile_report --table results/bench/compile/sm*-triton*.json
.PHONY: compile-report
compile-report: $(STAMP)
	$(PY) -m seqbench.kernels.compile_report --arch 90 --out results/bench/compile/
	$(PY) -m seqbench.kernels.compile_report --arch 80 --out results/bench/compile/
