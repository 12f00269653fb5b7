#!/usr/bin/env bash
# The benchmarks at the sizes of their goals, on a GPU machine, in one run:
#
#     bash benchmarks/run_all_gpu.sh [--out DIR] [--data DIR]
#
# --out (default runs/bench/results) receives run_all_gpu.log, train_throughput.json/.md,
# backbones.json and knn_throughput.json/.md; copy the tables into benchmarks/RESULTS.md. --data (default
# runs/bench) holds the generated dataset and its image cache (3 GB at 224px), reused by later
# runs. Python is $PYTHON, else the project's .venv, else python3; without nmslib the HNSW part
# is skipped. TRAIN_ARGS, BACKBONE_ARGS and KNN_ARGS are appended to the three commands (a later flag
# wins), e.g. for a dry run on the CPU with tiny sizes (benchmarks/RESULTS.md has one).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT_DIR=runs/bench/results
DATA=runs/bench
while [[ $# -gt 0 ]]; do
    if [[ "$1" == --out || "$1" == --data ]] && [[ $# -lt 2 ]]; then
        echo "error: $1 needs a folder" >&2; exit 2
    fi
    case "$1" in
        --out) OUT_DIR="$2"; shift 2 ;;
        --data) DATA="$2"; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument $1: use --out DIR or --data DIR" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/run_all_gpu.log"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
[[ -z "${PYTHON:-}" && -x .venv/bin/python ]] && PY=.venv/bin/python

{
    date -u +"%Y-%m-%d %H:%M UTC"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    echo "cpus: $(getconf _NPROCESSORS_ONLN)"
    df -h /dev/shm "$DATA" | tail -n +2    # loader workers hand batches over in /dev/shm
    $PY -c "import torch, torchvision, numpy; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"
    $PY -c "import nmslib" 2>/dev/null \
        || echo "no nmslib: HNSW is skipped (pip install -r requirements.txt installs it)"

    echo "== training throughput (20,000 JPEGs 500x375, ResNet-50, batch 128 bf16 vs 32 fp32; the"
    echo "   --frozen-image step timed against the fine-tuned one, interleaved)"
    $PY benchmarks/train_throughput.py --data-dir "$DATA/train_data" \
        --work-dir "$DATA/train_work" --out "$OUT_DIR/train_throughput.json" ${TRAIN_ARGS:-}
    echo "train_throughput exit status $?"

    echo "== image backbones (ResNet-18, ResNet-50, EfficientNet-Lite0 at 224px: feature extraction,"
    echo "   fine-tuned and frozen step, bf16 + channels_last for every backbone, timm's included)"
    $PY benchmarks/backbones.py --images 2048 --batch-size 128 --steps 30 \
        --data-dir "$DATA/backbones_data" --out "$OUT_DIR/backbones.json" ${BACKBONE_ARGS:-}
    echo "backbones exit status $?"

    echo "== kNN throughput (exact 1,000,000 x 200, k 200 on the GPU; HNSW on 100,000 on the CPUs)"
    $PY benchmarks/knn_throughput.py --n 1000000 --dim 200 --k 200 \
        --hnsw-n 100000 --probe-blocks 1024,4096 --out "$OUT_DIR/knn_throughput.json" ${KNN_ARGS:-}
    echo "knn_throughput exit status $?"
    date -u +"%Y-%m-%d %H:%M UTC"
} 2>&1 | tee "$LOG"
