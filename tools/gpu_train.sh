#!/usr/bin/env bash
# Train on a lent GPU host from the kit that tools/gpu_kit.sh built, then leave the trained model in $OUT.
#
#   TRAIN_SECONDS=480 KIT=.device bash tools/gpu_train.sh [train.py overrides]
#
# Starts from the shipped model (models/im2latex-base) with configs/base.json; the overrides follow it, e.g.
# `--max_steps 3600 --learning_rate 5e-4 --warmup_steps 200`. Training saves and stops after TRAIN_SECONDS
# (train.py --max_train_seconds), so the final model comes back even when max_steps was too many for the time.
# $OUT receives train.log, and the output folder without its checkpoints (the final model, processor, logs,
# curves) as a tar split into 15 MiB parts: `cat model.tar.* | tar x -C DEST` puts it back together.
set -euo pipefail
kit=${KIT:-.device}
out=${OUT:?set OUT to the folder that receives the trained model}
run=${RUN_DIR:-/tmp/im2latex-run}
cd "$(dirname "$0")/.."
[ -d "$kit/data" ] && [ -d "$kit/wheels" ] || { echo "$kit lacks data/ or wheels/: build it with tools/gpu_kit.sh" >&2; exit 1; }

export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if ! python3 -c "import datasets, evaluate, rapidfuzz" 2>/dev/null; then  # the kit's wheels, where the host lacks them
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$kit"/wheels/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
cat "$kit/data/pack.json"

status=0
accelerate launch train.py configs/base.json --dataset "$kit/data" --model_name_or_path models/im2latex-base \
  --output_dir "$run" --max_train_seconds "${TRAIN_SECONDS:-480}" "$@" 2>&1 | tee "$out/train.log" || status=$?
# Whatever happened, bring back what there is: the final model, or else the last checkpoint's.
if [ ! -f "$run/model.safetensors" ]; then
  last=$(ls -d "$run"/checkpoint-* 2>/dev/null | sort -V | tail -1)
  [ -n "$last" ] && run=$last
fi
[ -d "$run" ] && tar -C "$run" -cf - --exclude='checkpoint-*' --exclude='optimizer.pt' . | split -b 15m - "$out/model.tar."
ls -la "$out"
exit $status
