#!/usr/bin/env bash
# Time the U-Net with our kernels, candle's and onnxruntime, alternating, for each model folder
# at batch 1 and 8, and print one JSON line per run with the load average before it.
#
# Usage: benches/onnx/compare.sh ROUNDS MODEL_DIR...
#
# Each round runs the three back to back, so a change in machine load hits all three alike.
# candle's runs use fewer repetitions because one pass takes several times longer.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 ROUNDS MODEL_DIR..." >&2
    exit 2
fi
rounds=$1
shift

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
penumbra=${PENUMBRA:-$repo/target/release/penumbra}

load() {
    cut -d' ' -f1 /proc/loadavg
}

for model in "$@"; do
    # run.sh builds the virtual environment if needed and fails when the outputs disagree.
    for batch in 1 8; do
        "$here/run.sh" "$model" "$batch" 1 >/dev/null
    done
    for round in $(seq "$rounds"); do
        for batch in 1 8; do
            reps=$(( batch == 1 ? 10 : 3 ))
            echo "{\"round\": $round, \"load1\": $(load)}"
            "$penumbra" bench infer --model "$model" --batch "$batch" --reps "$reps" --kernels fast
            "$penumbra" bench infer --model "$model" --batch "$batch" --reps $(( reps < 5 ? 2 : 3 )) --kernels candle
            "$here/.venv/bin/python" "$here/export.py" "$model" --batch "$batch" --reps "$reps"
        done
    done
done
