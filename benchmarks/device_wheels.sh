#!/usr/bin/env bash
# Downloads into .whl/ exactly the wheels the GPU machine's image lacks for hpstudy, for its
# Python 3.12 on manylinux x86-64; benchmarks/device_check.sh installs them there with
# `pip install --no-index --no-deps --target` (that machine reaches no package registry).
#
# The image has torch 2.11.0+cu130, numpy, scipy, rich, matplotlib, markdown-it-py, onnx,
# onnxruntime, safetensors, tensorboard and pytest, but no pydantic: hpstudy's config layer.
# So: pydantic, its compiled core and its pure-Python needs (annotated-types,
# typing-inspection; typing-extensions too, since pydantic-core needs a newer one than an
# image may hold). Versions are constraints.txt's, so the GPU runs the code tested here.
#
#   bash benchmarks/device_wheels.sh        # in the repo's root; writes .whl/ (git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PACKAGES="pydantic pydantic-core annotated-types typing-inspection typing-extensions"
pins=()
for name in $PACKAGES; do
  pin=$(grep -iE "^${name}==" constraints.txt | awk '{print $1}')
  [ -n "$pin" ] || { echo "error: constraints.txt pins no version of $name" >&2; exit 2; }
  pins+=("$pin")
done
rm -rf .whl && mkdir .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .whl "${pins[@]}"
ls -l .whl
du -sh .whl
