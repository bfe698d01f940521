#!/bin/bash
# One device call after int8 / fp8 changes (tactics, placement, fallback, the budgeted search):
# the low-precision GPU tests against the CPU emulation, then BERT-base b32 at fp8 (with the fp16
# fallback) and `best` under a 2e-2 budget; logs under $OUT. About 9 minutes cold on an H100.
#   bash bench/lowp_check.sh            (MODELS=resnet50 BATCHES=32 BUDGET=1e-2 for other rows;
#                                        TESTS=0: the bench rows only; COMPILE=1: with torch.compile)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader
if [ "${TESTS:-1}" != 0 ]; then
timeout "${ATT_TIMEOUT:-90}" python3 -m pytest -q -m gpu -p no:cacheprovider -s tests/kernels/test_gpu_quant_attention.py > "$OUT/t_att.log" 2>&1
echo "fp8 attention tests rc=$?"; grep -E "vs emulation|passed|failed" "$OUT/t_att.log" | tail -n 12
timeout "${TESTS_TIMEOUT:-140}" python3 -m pytest -q -m gpu -p no:cacheprovider -s tests/kernels/test_gpu_quant_conv.py \
    tests/kernels/test_gpu_quant_gemm.py tests/precision/test_accuracy_gpu.py > "$OUT/t_lowp.log" 2>&1
echo "quantized conv / gemm / accuracy tests rc=$?"; grep -E "^FAILED|^ERROR|passed|failed|fallback:" "$OUT/t_lowp.log" | tail -n 12
fi
timeout "${BENCH_TIMEOUT:-300}" python3 bench/bench.py --models "${MODELS:-bert}" --batches "${BATCHES:-32}" \
    --precisions "${PRECISIONS:-fp8,best}" --budget "${BUDGET:-2e-2}" --runs 50 $([ "${COMPILE:-0}" = 1 ] || echo --skip-compile) --layers 4 \
    --timing-cache /tmp/tc_lowp.json --workdir /tmp/wbw --results "$OUT/lowp.md" > "$OUT/b_lowp.log" 2>&1
echo "bench rc=$?"; grep -E "^\| |best\]|per precision|fp16;|at fp16" "$OUT/b_lowp.log" | grep -v "^|---" | head -n 20
