#!/usr/bin/env bash
# The README's results: every suite side by side on this machine, written next to this script.
# Usage: benchmarks/run.sh [cpu|cuda]   (the comparisons need: pip install -e '.[bench]')
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
device="${1:-cpu}"
botnet bench --device "$device" --suite mhsa models resolution --memory --repeats 7 \
    --json "$here/results-$device.json" --csv "$here/results-$device.csv" --plot "$here/throughput-$device.png"
