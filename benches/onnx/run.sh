#!/usr/bin/env bash
# Time the U-Net in MODEL_DIR with onnxruntime (2 intra-op threads) at BATCH slices per pass
# and print one JSON line, after checking that onnxruntime's logits match penumbra's.
#
# Usage: benches/onnx/run.sh MODEL_DIR BATCH [REPS]
#
# The first run creates benches/onnx/.venv and installs the pinned packages of
# requirements.txt from PyPI. The agreement check runs `penumbra bench infer --dump-io` with the
# binary in $PENUMBRA (default target/release/penumbra, built by
# `cargo build --release -p penumbra`) and fails when the logits differ by more than
# export.py's tolerance.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
    echo "usage: $0 MODEL_DIR BATCH [REPS]" >&2
    exit 2
fi
model_dir=$1
batch=$2
reps=${3:-10}

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
penumbra=${PENUMBRA:-$repo/target/release/penumbra}
venv=$here/.venv

if [[ ! -x $penumbra ]]; then
    echo "run.sh: $penumbra not found; run cargo build --release -p penumbra or set PENUMBRA" >&2
    exit 1
fi
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c "import onnx, onnxruntime, numpy, safetensors" 2>/dev/null; then
    echo "run.sh: installing $here/requirements.txt into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --requirement "$here/requirements.txt"
fi

io_dir=$(mktemp -d)
trap 'rm -rf "$io_dir"' EXIT
"$penumbra" bench infer --model "$model_dir" --batch "$batch" --reps 1 --warmup 1 --dump-io "$io_dir" >/dev/null

"$venv/bin/python" "$here/export.py" "$model_dir" --batch "$batch" --reps "$reps" --check-io "$io_dir"
