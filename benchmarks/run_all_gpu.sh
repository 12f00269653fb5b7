#!/usr/bin/env bash
# Every benchmark of issue 6 in one run on the lent H200, in about 4 minutes (at most 9.5).
#
# The device's Python (3.12, torch 2.11) lacks nmslib (the benchmarks need nothing else the
# project pins: no gensim, no nltk). Before the device call, on the ordinary machine, in the
# repo root:
#     bash benchmarks/run_all_gpu.sh --fetch-wheels      # -> .whl/ (1 MB, git-ignored)
# then run on the device, carrying that folder:
#     run(command="bash benchmarks/run_all_gpu.sh", carry=[".whl"], timeout_s=600)
# Without .whl everything runs but the HNSW part. Results land in $OUT (runs/bench/results
# without it): run_all_gpu.log, train_throughput.json/.md, knn_throughput.json/.md; copy the
# tables into benchmarks/RESULTS.md. TRAIN_ARGS and KNN_ARGS are appended to the two commands
# (a later flag wins), for a dry run on the CPU with tiny sizes.
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    mkdir -p .whl
    grep -qxF "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
    PY=python3; [[ -x .venv/bin/python ]] && PY=.venv/bin/python
    exec "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .whl \
        nmslib==2.1.2
fi

OUT="${OUT:-runs/bench/results}"
mkdir -p "$OUT"
LOG="$OUT/run_all_gpu.log"
BENCH="${BENCH_DIR:-/tmp/bench}"    # generated data and image cache: 3 GB, not worth bringing back
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"     # the device's python3 holds torch

{
    date -u +"%Y-%m-%d %H:%M UTC"
    if compgen -G ".whl/*.whl" > /dev/null; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    echo "cpus: $(getconf _NPROCESSORS_ONLN)"
    df -h /dev/shm /tmp | tail -n +2    # loader workers hand batches over in /dev/shm
    $PY -c "import torch, torchvision, numpy; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"
    $PY -c "import nmslib" 2>/dev/null \
        || echo "no nmslib: HNSW is skipped (bash benchmarks/run_all_gpu.sh --fetch-wheels, carry .whl)"

    echo "== training throughput (20,000 JPEGs 500x375, ResNet-50, batch 128 bf16 vs 32 fp32)"
    timeout 330 $PY benchmarks/train_throughput.py --data-dir "$BENCH/train_data" \
        --work-dir "$BENCH/train_work" --out "$OUT/train_throughput.json" ${TRAIN_ARGS:-}
    echo "train_throughput exit status $?"

    echo "== kNN throughput (exact 1,000,000 x 200, k 200 on the GPU; HNSW on 100,000 on the CPUs)"
    timeout 240 $PY benchmarks/knn_throughput.py --n 1000000 --dim 200 --k 200 \
        --hnsw-n 100000 --probe-blocks 1024,4096 --out "$OUT/knn_throughput.json" ${KNN_ARGS:-}
    echo "knn_throughput exit status $?"
    date -u +"%Y-%m-%d %H:%M UTC"
} 2>&1 | tee "$LOG"
