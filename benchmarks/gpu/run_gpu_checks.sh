#!/usr/bin/env bash
# The GPU checks of issue 4, as run on a lent NVIDIA machine (Python 3.12 image with torch, onnx,
# scikit-learn; onnxruntime-gpu and the few missing pure-Python deps carried as wheels).
#   WHEELS=dir-of-wheels OUT=dir-for-results bash benchmarks/gpu/run_gpu_checks.sh
# WHEELS holds onnxruntime-gpu (cp312, ~255 MB; over a 64 MiB transfer limit it travels in parts:
# `split -b 55M`, then `cat parts > onnxruntime_gpu-...whl` on the GPU machine) plus skl2onnx,
# skops, orjson, starlette and uvicorn, which that image lacks:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d WHEELS \
#       onnxruntime-gpu skl2onnx skops orjson starlette uvicorn
# Never run so far: no GPU machine was lent to the session that wrote it.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT" /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "${WHEELS:?}"/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 MODELPACK_HOME=/tmp/mphome
# CUDA/cuDNN from the image's nvidia-* wheels, for onnxruntime-gpu's CUDA provider.
LD_LIBRARY_PATH=$(python3 -c 'import glob, os, site; print(":".join(sorted(glob.glob(os.path.join(site.getsitepackages()[0], "nvidia", "*", "lib")))))'):${LD_LIBRARY_PATH:-}
export LD_LIBRARY_PATH
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c 'import onnxruntime as o, torch; print("onnxruntime", o.__version__, o.get_available_providers()); print("torch", torch.__version__, torch.cuda.is_available())'
} 2>&1 | tee "$OUT/env.txt"
python3 -m pytest -p no:cacheprovider -m gpu -v -rs -W ignore::DeprecationWarning -W ignore::FutureWarning \
    tests/flavors/test_onnxruntime.py tests/test_convert.py tests/flavors/test_torch.py 2>&1 | tee "$OUT/gpu-tests.txt"
python3 benchmarks/bench_onnx.py --device cuda 2>&1 | tee "$OUT/bench-onnx-cuda.txt"
