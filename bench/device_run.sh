#!/bin/bash
# One device call: install the carried wheels, run the GPU tests and a benchmark subset, logs to $OUT.
#   bash bench/device_run.sh "<pytest args>" "<bench args>"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
if [ -n "$1" ]; then
  timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -q -m gpu -p no:cacheprovider $1 > "$OUT/tests.log" 2>&1
  echo "tests rc=$?"; tail -n 25 "$OUT/tests.log"
fi
if [ -n "$2" ]; then
  timeout "${BENCH_TIMEOUT:-400}" python3 bench/bench.py $2 --results "$OUT/RESULTS.md" > "$OUT/bench.log" 2>&1
  echo "bench rc=$?"; grep -v "^\[" "$OUT/bench.log" | tail -n 40
fi
