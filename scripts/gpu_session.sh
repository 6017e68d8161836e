#!/usr/bin/env bash
# Everything seqbench does on a GPU, for a lent GPU machine (issue 14), in stages that each have a time limit and write
# under $OUT. Prepare here first (`make gpu-prepare` fills .gpu/ with the wheels the GPU image lacks and the commit),
# then call the device tool from the repository root, carrying .gpu. Stages (limits in LIMIT below):
#   env       nvidia-smi, versions, the commit
#   kernels   the compiled-GPU kernel tests (tests/kernels/test_fused_gpu.py first), then every kernel test
#   harness   the harness on CUDA (tests/harness/test_devices.py ...), bf16 runs of LSTM H=256 T=1000, reproduce
#   bench     cuDNN vs Triton vs the step loop, RNN/LSTM/GRU, B=64 T=1024 H=64..512, fp32 (TF32 defaults) and bf16
#   ieee      the same, fp32 with TF32 off everywhere (torch, triton)
#   min       minGRU/minLSTM: torch scan vs Triton scan vs step loop
#   overhead  pytest-benchmark: harness step vs a bare loop on CUDA, and the kernel benchmarks
#   share     runs per hour at --workers-per-gpu 1, 2, 4, 8 (scripts/gpu_share.yaml)
#   quick     the quick preset on CUDA and its report
#   profile   Nsight Compute on one training step of the fused and cuDNN kernels
# Groups: correct = env kernels harness; measure = bench ieee min; train = overhead share quick. With a 15-minute
# device budget, plan two calls: `make bench-gpu` (env bench kernels, at most 7.5 minutes), then
# `bash scripts/gpu_session.sh harness ieee min`. Nothing here changes the GPU's settings.
# SEQBENCH_PYTHON picks the Python (default python3); BENCH_OUT, if set, also receives the bench JSON
# (`make bench-gpu` sets both: its venv's Python where there is one, and results/bench).
#
# What comes back under $OUT (at most 8 files): log.txt (all output), summary.txt (each stage's exit code and
# seconds), results.tar.gz (bench JSON, JUnit XML, pytest-benchmark JSON, profiles, the quick preset's records and
# report), rewritten after every stage so that a stage cut off by a time limit still leaves the earlier ones.
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-$REPO/gpu-out}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/seqbench-gpu.XXXX)
LOG=$OUT/log.txt
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
export PYTHONUNBUFFERED=1
PY=${SEQBENCH_PYTHON:-python3}  # the GPU image's python3 holds torch and triton; `make bench-gpu` passes its venv's
[[ $PY == */* && $PY != /* ]] && PY=$PWD/$PY  # absolute, but not resolved: a venv's python is a symlink
unset TRITON_INTERPRET  # compiled kernels: this is the GPU run

say() { echo "== $*" | tee -a "$LOG"; }

setup() {
    if [ -d .gpu/wheels ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .gpu/wheels/*.whl >> "$LOG" 2>&1 || say "wheels did not install (see log)"
        export PYTHONPATH=/tmp/site:$REPO
    else
        export PYTHONPATH=$REPO
        say "no .gpu/wheels (run scripts/gpu_prepare.sh here and carry .gpu): harness stages may fail on imports"
    fi
    if [ -f .gpu/_build.py ] && [ ! -e .git ]; then cp .gpu/_build.py seqbench/_build.py; fi  # the commit, where no .git can say
    mkdir -p /tmp/seqbench-bin
    printf '#!/bin/sh\nexec %s -m seqbench.harness.cli "$@"\n' "$PY" > /tmp/seqbench-bin/seqbench
    chmod +x /tmp/seqbench-bin/seqbench
    export PATH=/tmp/seqbench-bin:$PATH
    PYTEST="$PY -m pytest -q -p no:cacheprovider -o addopts=-ra"
    if "$PY" -c "import pytest_timeout" 2>/dev/null; then
        PYTEST="$PYTEST --timeout=180"  # a hung kernel fails its test, not the whole call
    fi
    export PYTEST WORK PY
}

pack() { tar -czf "$OUT/results.tar.gz" -C "$WORK" . 2>/dev/null; }

# stage NAME SECONDS FUNCTION: run it under a time limit, log it, record exit code and time, pack the results
stage() {
    local name=$1 limit=$2 fn=$3
    say "$name (limit ${limit}s)"
    local start=$SECONDS
    timeout -k 10 "$limit" bash -c "$fn" 2>&1 | tee -a "$LOG" "$WORK/$name.log"  # shown too: the tool returns the tail
    local rc=${PIPESTATUS[0]}
    printf '%-10s rc=%-4s %5ss\n' "$name" "$rc" "$((SECONDS - start))" | tee -a "$SUMMARY" "$LOG"
    pack
}

env_stage() {
    nvidia-smi
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv
    "$PY" - <<'PY'
import platform, torch, triton
p = torch.cuda.get_device_properties(0)
print(f"python {platform.python_version()}  torch {torch.__version__}  cuda {torch.version.cuda}  "
      f"cudnn {torch.backends.cudnn.version()}  triton {triton.__version__}")
print(f"{p.name}: {p.multi_processor_count} SMs, {p.total_memory / 2**30:.1f} GiB, cc {p.major}.{p.minor}")
import seqbench.harness.provenance as prov
print("seqbench", prov.git_state(), "source", prov.source_digest())
PY
    command -v ncu && ncu --version | tail -1
}

kernels_stage() {  # the compiled-GPU tests first (issue 14's list), then every other kernel test on the GPU
    local rc=0
    $PYTEST tests/kernels/test_fused_gpu.py --durations=10 --junitxml="$WORK/junit-kernels-gpu.xml" || rc=1
    $PYTEST tests/kernels --ignore=tests/kernels/test_fused_gpu.py --durations=10 \
        --junitxml="$WORK/junit-kernels.xml" || rc=1
    return $rc
}

harness_stage() {
    $PYTEST tests/harness/test_devices.py tests/harness/test_bench.py tests/harness/test_minrnn_model.py \
        --junitxml="$WORK/junit-harness.xml" &&
    seqbench run task=adding task.length=1000 model=lstm model.hidden=256 dtype=bfloat16 train.steps=200 \
        train.eval_every=100 train.grad_profile_every=100 --out "$WORK/runs" --quiet &&
    seqbench run task=adding task.length=1000 model=lstm model.hidden=256 model.backend=triton dtype=bfloat16 \
        train.steps=200 train.eval_every=100 train.grad_profile_every=100 --out "$WORK/runs" --quiet &&
    for run in "$WORK"/runs/*/; do seqbench reproduce "$run" --quiet || return 1; done
}

_bench() {  # seqbench bench at B = 64, T = 1024, H = 64..512, with the given cells, backends, dtypes and flags
    local rc=0
    seqbench bench --device cuda --batch 64 --hidden 64,128,256,512 --length 1024 --out "$WORK/bench" "$@" || rc=1
    if [ -n "${BENCH_OUT:-}" ] && [ -d "$WORK/bench" ]; then mkdir -p "$BENCH_OUT" && cp -r "$WORK/bench/." "$BENCH_OUT/"; fi
    return $rc
}

bench_stage() {  # cuDNN vs the fused kernels vs the step loop, fp32 with torch's TF32 defaults and bf16
    _bench --cells rnn,lstm,gru --backends torch,triton,reference --dtype float32,bfloat16
}

ieee_stage() {  # fp32 with TF32 off in cuDNN and cuBLAS as well: IEEE products on both sides
    _bench --cells rnn,lstm,gru --backends torch,triton --dtype float32 --no-tf32
}

min_stage() {  # minGRU/minLSTM: the torch scan vs the Triton scan vs the step loop
    _bench --cells mingru,minlstm --backends torch,triton,reference --dtype float32,bfloat16
}

overhead_stage() {
    $PYTEST tests/benchmarks/test_step_overhead.py tests/benchmarks/test_kernels.py --benchmark-only \
        --benchmark-columns=min,median,iqr,rounds --benchmark-json="$WORK/benchmarks.json"
}

share_stage() {  # runs per hour with N runs per GPU; each N does the same 16 runs from scratch
    local failed=0
    for n in 1 2 4 8; do
        local start=$SECONDS
        seqbench sweep scripts/gpu_share.yaml --workers-per-gpu "$n" --out "$WORK/share-$n" > "$WORK/share-$n.txt" 2>&1
        local rc=$? secs=$((SECONDS - start))
        [ $rc -eq 0 ] || failed=1
        echo "workers_per_gpu=$n rc=$rc wall_s=$secs runs_per_hour=$((16 * 3600 / (secs > 0 ? secs : 1)))" |
            tee -a "$WORK/share.txt"
    done
    return $failed
}

quick_stage() {
    seqbench sweep quick device=cuda --out "$WORK/quick" && seqbench report "$WORK/quick/quick"
}

profile_stage() {  # one training step's kernels under ncu: the fused kernels and cuDNN's, bf16 and fp32 (TF32 off)
    command -v ncu > /dev/null || { echo "no ncu on this machine"; return 1; }
    local failed=0
    local metrics=l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum
    local sections=(--section SpeedOfLight --section LaunchStats --section Occupancy
                    --section MemoryWorkloadAnalysis_Tables --section ComputeWorkloadAnalysis)
    for spec in "lstm triton 256 bfloat16" "lstm torch 256 bfloat16" "lstm triton 256 float32 --no-tf32" \
                "lstm torch 256 float32 --no-tf32" "gru triton 128 bfloat16"; do
        local name; name=$(echo "$spec" | tr ' ' '-' | tr -d -)
        ncu --profile-from-start off --clock-control none --launch-count 60 --metrics "$metrics" "${sections[@]}" \
            -f -o "$WORK/ncu-$name" "$PY" scripts/gpu_profile.py $spec &&
        ncu --import "$WORK/ncu-$name.ncu-rep" --page details --csv > "$WORK/ncu-$name.csv" || failed=1
    done
    return $failed
}

export -f _bench env_stage kernels_stage harness_stage bench_stage ieee_stage min_stage overhead_stage share_stage \
    quick_stage profile_stage
# seconds each stage may take; a bench stage cut off keeps the rows it measured (its JSON is rewritten after each)
declare -A LIMIT=([env]=30 [kernels]=180 [harness]=150 [bench]=240 [ieee]=120 [min]=120 [overhead]=90 [share]=200
                  [quick]=240 [profile]=300)
STAGES=()
for arg in "${@:-correct measure train profile}"; do
    for word in $arg; do
        case $word in
            correct) STAGES+=(env kernels harness) ;;
            measure) STAGES+=(bench ieee min) ;;
            train) STAGES+=(overhead share quick) ;;
            *) [ -n "${LIMIT[$word]:-}" ] || { echo "unknown stage '$word': stages are ${!LIMIT[*]}; groups:" \
                   "correct measure train" >&2; exit 2; }
               STAGES+=("$word") ;;
        esac
    done
done
setup
for s in "${STAGES[@]}"; do
    stage "$s" "${LIMIT[$s]}" "${s}_stage"
done
say "summary"
cat "$SUMMARY"
