#!/usr/bin/env bash
# The prepared GPU check, under 5 minutes on a lent CUDA machine: `train` on both tasks, `perf` with the
# notebook comparison, and a 4-trial study, all on --device cuda, each step's output and wall time in $OUT.
#
# Example: bash benchmarks/gpu_check.sh                 (OUT=/tmp/gpu_check by default)
#          DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh   (a rehearsal on a machine without a GPU)
#
# A lent machine may have torch but neither mlflow nor optuna, and no internet: put their wheels in .whl/ and
# MNIST in data/ (`rnnbench data fetch --data-dir data`) and carry both (docs/performance.md, "On a GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
mkdir -p "$OUT"
if ! python3 -c "import mlflow, optuna" 2>/dev/null && [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 RNNBENCH_DATA="${RNNBENCH_DATA:-$PWD/data}"
URI="sqlite:///$OUT/mlruns/mlflow.db"
if [ "$QUICK" = 1 ]; then small=(--train-size 2000); perf_size=(--quick); else small=(); perf_size=(); fi

rnnbench() { python3 -m benchmark "$@"; }
step() {  # NAME COMMAND...: the command's output in $OUT/NAME.log, then its wall time
    local name=$1 started=$SECONDS
    shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$OUT/$name.log"
    echo "== $name: $((SECONDS - started)) s"
}

python3 -c "import torch; gpu = torch.cuda.is_available(); print('torch', torch.__version__, '| cuda:', gpu,
      torch.cuda.get_device_name(0) if gpu else '')"
step train-mnist rnnbench train --task mnist --arch lstm --device "$DEVICE" --epochs 2 "${small[@]}" \
    --tracking-uri "$URI" --quiet
step train-addition rnnbench train --task addition --arch gru --device "$DEVICE" --epochs 3 "${small[@]}" \
    --tracking-uri "$URI" --quiet
step perf rnnbench perf --device "$DEVICE" "${perf_size[@]}" --out "$OUT/performance.md"

# Four trials of a small addition search, the device fixed in the study file as a user would fix it.
cat >"$OUT/gpu_addition.toml" <<EOF
task = "addition"
description = "GPU check: four trials on $DEVICE"

[fixed]
device = "$DEVICE"
batch_size = 128

[space]
hidden_size = { type = "int", low = 8, high = 32, log = true }
lr = { type = "float", low = 3e-3, high = 3e-2, log = true }

[sampler]
type = "tpe"
seed = 0

[presets.quick.budget]
trials = 4
epochs = 3
train_size = 4000

[presets.standard.budget]
trials = 4
epochs = 3

[presets.full.budget]
trials = 4
epochs = 3
EOF
step study rnnbench tune "$OUT/gpu_addition.toml" --arch lstm --trials 4 --tracking-uri "$URI" \
    --storage "$OUT/mlruns/optuna.journal"
echo "== done: logs, performance.md and the store in $OUT"
