#!/bin/bash
# One device call after runtime / precision / profile changes: the new GPU tests first, the GPU
# accuracy check of MobileNetV2 fp16, then the GPU engine tests (REST=... for others); logs under $OUT.
#   bash bench/device_check.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader
NEW=${NEW:-"tests/runtime/test_profiles_gpu.py tests/precision/test_accuracy_gpu.py tests/explore/test_replay_gpu.py"}
timeout "${NEW_TIMEOUT:-90}" python3 -m pytest -q -m gpu -p no:cacheprovider $NEW > "$OUT/new.log" 2>&1
echo "new gpu tests rc=$?"; tail -n 15 "$OUT/new.log"
timeout "${ACC_TIMEOUT:-35}" python3 bench/accuracy_check.py --device gpu > "$OUT/accuracy.log" 2>&1
echo "accuracy rc=$?"; grep -E "error vs fp32|top contributors" "$OUT/accuracy.log"
REST=${REST:-tests/kernels/test_gpu_engine.py}
timeout "${REST_TIMEOUT:-70}" python3 -m pytest -q -m gpu -p no:cacheprovider $REST > "$OUT/rest.log" 2>&1
echo "rest gpu tests rc=$?"; tail -n 15 "$OUT/rest.log"
