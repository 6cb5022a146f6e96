#!/usr/bin/env bash
# The README's results: every suite side by side on this machine, written next to this script.
# Usage: benchmarks/run.sh [cpu|cuda]   (the comparisons need: pip install -e '.[bench]')
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
device="${1:-cpu}"
out="$here/results-$device"
# MHSA against timm and lucidrains, BoTNet-50 against ResNet-50, throughput against resolution.
botnet bench --device "$device" --suite mhsa models resolution --memory --repeats 7 \
    --json "$out.json" --csv "$out.csv" --plot "$here/throughput-$device.png"
# timm's pretrained BoTNets against ours with the same weights: as each comes, then both channels_last.
botnet bench --device "$device" --suite pretrained --memory --repeats 7 --json "$out-pretrained.json"
botnet bench --device "$device" --suite pretrained --channels-last --repeats 7 --json "$out-pretrained-channels-last.json"
# Deployment: eager PyTorch against the same weights exported to ONNX and run by onnxruntime (CPU only).
if [ "$device" = cpu ]; then
    botnet bench --suite deploy --memory --repeats 7 --json "$out-deploy.json"
fi
# Detection sizes (2048 px; BoT blocks in c4 at 1024 px), with peak memory.
botnet bench --device "$device" --suite large --memory --repeats 3 --warmup 1 --json "$out-large.json"
if [ "$device" = cuda ]; then  # the GPU checks and benchmarks (batch 32 and 64, fp32 and bf16 autocast)
    bash "$here/gpu.sh" "$here/results-gpu"
fi
