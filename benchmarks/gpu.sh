#!/usr/bin/env bash
# The GPU checks and benchmarks, on a machine with one CUDA GPU, from the repository root:
#
#     bash benchmarks/gpu.sh [RESULTS_DIR]        (default: $OUT, else benchmarks/gpu-results)
#
# 1. Correct: the tests with CUDA cases (every attention path against the float64 formula in float32,
#    float16 and bfloat16, forward and backward; every model; float16 with its gradient scaler; nccl with
#    SyncBatchNorm; export of a GPU model), then the runs of the suite, which train on the GPU.
# 2. Fast: `botnet bench` on cuda: MHSA against timm's BottleneckAttn with the same weights, each of our
#    paths by name (fp32, then bf16), BoTNet-50 against ResNet-50 (bf16, channels_last); one epoch of the
#    detection demo; the plan of a detection run fitted to a photo set.
# 3. Record: gpu.log, tests.xml and one JSON file per benchmark in RESULTS_DIR.
#
# Each step has a time limit (the whole script stays under about 8 minutes on an H200) and a failed or
# cut step does not stop the next. The project need not be installed: it runs from this folder with the
# machine's PyTorch, as long as torch, torchvision, timm and pycocotools import (a folder .whl of wheels,
# where present, is installed first).
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=$(mkdir -p "${1:-${OUT:-benchmarks/gpu-results}}" && cd "${1:-${OUT:-benchmarks/gpu-results}}" && pwd)
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
LOG="$RESULTS/gpu.log"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
: >"$LOG"

step() {  # step NAME SECONDS COMMAND...: run COMMAND with a time limit, its output in the log
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "=== $name (at most ${limit} s)" | tee -a "$LOG"
    timeout --kill-after 10 "$limit" "$@" >>"$LOG" 2>&1
    echo "=== $name: exit $? after $((SECONDS - start)) s" | tee -a "$LOG"
}

if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-cache-dir --target "$WORK/site" .whl/*.whl >>"$LOG" 2>&1
    export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi
step environment 30 bash -c "nvidia-smi; $PY -c 'import torch, torchvision, timm; print(torch.__version__, torchvision.__version__, timm.__version__, torch.cuda.get_device_name(), torch.cuda.get_device_capability())'"

step "tests with CUDA cases" 100 "$PY" -m pytest -q -p no:cacheprovider -n 8 --junitxml "$RESULTS/tests.xml" \
    tests/layers/test_attention.py tests/training/test_gpu.py tests/test_export.py \
    tests/models/test_models.py -k "cuda or gpu or nccl"

bench() {  # bench NAME SECONDS FLAGS...
    local name=$1 limit=$2
    shift 2
    step "bench $name" "$limit" "$PY" -m botnet bench --device cuda --memory --repeats 10 --warmup 3 \
        --json "$RESULTS/bench-$name.json" "$@"
}
bench mhsa-bf16 110 --suite gpu-mhsa --bf16
bench mhsa-fp32 100 --suite gpu-mhsa
bench models-bf16 50 --suite gpu --bf16 --channels-last

step "detection demo, one epoch" 70 "$PY" -m botnet detect train --epochs 1 --output-dir "$WORK/demo"
step "detection fitted to photos: the plan" 60 bash -c "$PY benchmarks/detection_sets.py photos $WORK/photos \
    --train-images 24 --val-images 8 && $PY -m botnet detect train --data $WORK/photos --epochs 1 \
    --output-dir $WORK/photos-run"
"$PY" - "$WORK" "$RESULTS/runs.json" <<'EOF' >>"$LOG" 2>&1
import json, os, sys
work, out = sys.argv[1:]
found = {}
for run in ("demo", "photos-run"):
    for name in ("summary.json", "config.json"):
        path = os.path.join(work, run, name)
        if os.path.exists(path):
            with open(path) as f:
                found.setdefault(run, {})[name] = json.load(f)
with open(out, "w") as f:
    json.dump(found, f, indent=1)
EOF

step "the suite's runs, on the GPU" 60 "$PY" -m pytest -q -p no:cacheprovider -n 8 \
    tests/training tests/tasks/test_classification.py -k "not killed and not ddp and not gpu"
echo "=== done in $SECONDS s" | tee -a "$LOG"
