#!/usr/bin/env bash
# Build the folder that a lent GPU host needs beside the repository to train: the training data packed into what
# the upload leaves free, and wheels of the packages that host lacks (it has torch, transformers, timm, accelerate,
# tokenizers, pyarrow and pandas, on Python 3.12; not datasets, evaluate or rapidfuzz).
#
#   tools/gpu_kit.sh DATASET [KIT] [UPLOAD_MIB]      # DATASET: a folder written by data.prepare; KIT: .device
#
# The kit is ignored by git (.git/info/exclude) and travels with `carry=[KIT]`; tools/gpu_train.sh runs there.
# Everything tracked travels too, the shipped model included, so the data gets UPLOAD_MIB (64) less the tracked
# files, the wheels and a 1 MiB margin.
set -euo pipefail
dataset=${1:?usage: tools/gpu_kit.sh DATASET [KIT] [UPLOAD_MIB]}
kit=${2:-.device}
upload_mib=${3:-64}
python=${PYTHON:-.venv/bin/python}
cd "$(git rev-parse --show-toplevel)"
[ -d "$dataset/data" ] || { echo "$dataset has no data/ folder: build it with python -m data.prepare" >&2; exit 1; }
[ -e "$kit" ] && { echo "$kit exists: remove it or name another kit folder" >&2; exit 1; }
grep -qxF "/$kit/" .git/info/exclude 2>/dev/null || echo "/$kit/" >>.git/info/exclude

# The versions tested here, as wheels for the host's CPython 3.12 on x86-64.
packages=()
for name in datasets dill multiprocess evaluate rapidfuzz; do
  packages+=("$name==$("$python" -c "import importlib.metadata as m; print(m.version('$name'))")")
done
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$kit/wheels" "${packages[@]}"

# What travels besides the kit: tracked files, and untracked ones that git does not ignore.
tracked=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s | awk '{s += $1} END {print s}')
wheels=$(stat -c %s "$kit"/wheels/*.whl | awk '{s += $1} END {print s}')
budget=$(awk -v u="$upload_mib" -v t="$tracked" -v w="$wheels" 'BEGIN {printf "%.1f", u - (t + w) / 2^20 - 1}')
echo "tracked files $((tracked / 1024)) KiB, wheels $((wheels / 1024)) KiB: $budget MiB left for the data"
"$python" -m data.pack --dataset "$dataset" --output "$kit/data" --max-mib "$budget" --eval-samples 500
du -sh "$kit"
