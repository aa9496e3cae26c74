#!/usr/bin/env bash
# Fill wheels/ (git-ignored) with the wheels dev/gpu_bench.sh installs on a GPU machine
# that has Python 3.12 and PyTorch but no package registry (the OpenMMLab packages below;
# mmcv-lite, without compiled ops, is all mmpretrain needs there).
#
#   bash dev/download_gpu_wheels.sh [--spconv] [DIR]   # DIR: wheels
#   (--spconv: spconv-cu126 and its dependencies into DIR-spconv)
set -euo pipefail
cd "$(dirname "$0")/.."

SPCONV=0
if [[ "${1:-}" == "--spconv" ]]; then SPCONV=1; shift; fi
DIR=${1:-wheels}
PY=${PYTHON:-python3}
mkdir -p "$DIR"

# the GPU machine's interpreter and platform, whatever this machine runs
TARGET=(--only-binary :all: --python-version 3.12 --platform manylinux_2_28_x86_64)
# importlib_metadata 10.x needs a module the GPU image lacks; zipp is its dependency
# every version pinned: gpu_bench.sh installs wheels/*.whl, and two versions of one
# package there would stop it before any run
OPENMMLAB=(mmengine==0.10.7 mmpretrain==1.2.0 addict==2.4.0 termcolor==3.3.0 yapf==0.40.1
           platformdirs==4.14.8 importlib_metadata==8.5.0 zipp==4.1.2 model-index==0.1.11
           mat4py==0.6.0 ordered-set==4.1.0 python-frontmatter==1.3.0)
"$PY" -m pip download --no-deps "${TARGET[@]}" -d "$DIR" "${OPENMMLAB[@]}"

# mmcv-lite is pure Python (no compiled ops); build the wheel from its sdist if PyPI has none
if ! "$PY" -m pip download --no-deps "${TARGET[@]}" -d "$DIR" mmcv-lite==2.1.0; then
  echo "no mmcv-lite 2.1.0 wheel on the index: building it from the sdist" >&2
  MMCV_WITH_OPS=0 "$PY" -m pip wheel --no-deps -w "$DIR" mmcv-lite==2.1.0
fi

if (( SPCONV )); then  # optional: backend='spconv' on CUDA 12.6+ (about 70 MB: over the
  # 64 MiB some machines take in one transfer, so in a folder of its own)
  "$PY" -m pip download --no-deps "${TARGET[@]}" -d "$DIR-spconv" \
    spconv-cu126==2.3.8 cumm-cu126 pccm ccimport fire lark pybind11
fi
ls -1 "$DIR"
(( SPCONV )) && ls -1 "$DIR-spconv"
exit 0
