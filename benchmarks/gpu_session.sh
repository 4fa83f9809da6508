#!/bin/sh
# Every GPU check and benchmark in one command, for a lent GPU machine (device time is short: one call, 8 minutes).
#
#   sh benchmarks/gpu_session.sh            # from the repository root; the package runs from the source tree
#
# Steps run most important first, each under its own time limit and all within BUDGET seconds (default 480), so a
# slow step cannot take the rest with it; a failing step does not stop the others. Each step's whole output goes to
# $OUT/<step>.txt (the device tool brings $OUT back; ./gpu-results without it), and the end of it to the terminal.
# DEVICE (default cuda), PYTHON (default python3) and BUDGET can be set in the environment.
set -u
out=${OUT:-gpu-results}
budget=${BUDGET:-480}
device=${DEVICE:-cuda}
python=${PYTHON:-python3}  # the GPU image's interpreter is python3
mkdir -p "$out"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
begin=$(date +%s)

step() {  # step NAME LIMIT COMMAND...: run COMMAND under min(LIMIT, what is left of the budget)
    name=$1 limit=$2
    shift 2
    left=$((budget - ($(date +%s) - begin)))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 10 ]; then
        echo "== $name: skipped, the budget of $budget s is spent" | tee "$out/$name.txt"
        return
    fi
    echo "== $name ($limit s at most): $*"
    started=$(date +%s)
    timeout "$limit" "$@" >"$out/$name.txt" 2>&1
    status=$?
    echo "== $name: exit $status after $(($(date +%s) - started)) s"
    tail -n 30 "$out/$name.txt"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo 'no nvidia-smi'
"$python" -c "import torch, lightning, torchmetrics; print('torch', torch.__version__, 'lightning', lightning.__version__, 'torchmetrics', torchmetrics.__version__)"
step device_check 90 "$python" benchmarks/device_check.py --device "$device"
step full_size 120 "$python" benchmarks/full_size.py --device "$device" --repeats 5
step full_size_bf16 90 "$python" benchmarks/full_size.py --device "$device" --autocast bf16 --repeats 5
step counts_memory_profile 90 sh -c "\"$python\" benchmarks/kernel_counts.py --device $device && \
    \"$python\" benchmarks/accelerator_memory.py --device $device && \
    \"$python\" benchmarks/device_profile.py --device $device"
step vs_loop 60 "$python" benchmarks/vs_loop.py --device "$device"
step probe_overhead 90 "$python" benchmarks/probe_overhead.py --device "$device" --repeats 5
step probe_overhead_bf16 90 "$python" benchmarks/probe_overhead.py --device "$device" --autocast bf16 --repeats 3
step cuda_tests 40 "$python" -m pytest -q tests/test_same_number_everywhere.py -k cuda
echo "== all steps done in $(($(date +%s) - begin)) s; outputs in $out"
