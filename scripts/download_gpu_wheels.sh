#!/usr/bin/env bash
# Download into .whl/ (git-ignored) the wheels that benchmarks/gpu_evidence.sh needs on a GPU machine that
# has no network: name `.whl` in the device tool's `carry`, and the script installs them into /tmp/site.
#
# Such a machine here (Python 3.12) has torch, triton, torchmetrics, huggingface-hub >= 1.32, safetensors
# >= 0.8, regex, requests, filelock, numpy and Pillow, which covers diffusers 0.42.1's requirements
# (importlib_metadata is imported only on Python < 3.8): diffusers itself is the one wheel to carry.
# Extra arguments are more requirements, e.g. `importlib_metadata==8.7.0` for an image that lacks more.
#
# flash-attn-4 (for the flex-flash backend) does not fit: its nvidia-cutlass-dsl-libs-cu12/-cu13 wheel is
# about 92 MB, over the 64 MiB that travels with one call. Where pip reaches PyPI: `pip install flash-attn-4`
# (`flash-attn-4[cu13]` on CUDA 13).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
mkdir -p .whl
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl diffusers==0.42.1 "$@"
ls -l .whl
