#!/usr/bin/env bash
# Create or reuse .venv/ at the repository root and install everything hgkd_mm needs.
# Safe to re-run: each step checks what is already there.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${HGKD_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

# A new (or empty) folder gets a venv; a venv without pip (its creation cut short) gets
# pip, or is made again. Anything else at that path is left alone: --clear would empty it.
if ! { [ -x "$PY" ] && "$PY" -m pip --version >/dev/null 2>&1; }; then
  if [ ! -e "$VENV" ] || { [ -d "$VENV" ] && [ -z "$(ls -A "$VENV")" ]; }; then
    python3 -m venv "$VENV"
  elif [ -f "$VENV/pyvenv.cfg" ]; then
    if ! { [ -x "$PY" ] && "$PY" -m ensurepip -q >/dev/null 2>&1; }; then
      python3 -m venv --clear "$VENV"
    fi
  else
    echo "[install] $VENV exists and is not a Python venv (no pyvenv.cfg): set HGKD_VENV" \
      "to a new folder or to a venv" >&2
    exit 2
  fi
fi
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

# 1. torch: keep whatever torch is present, otherwise the release that lies on this disk.
if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
  echo "[install] torch 2.14.1 + torchvision 0.29.1"
  pip_install torch==2.14.1 torchvision==0.29.1
fi
TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)')"

# 2. mmcv 2.1.0 with compiled ops. Its setup.py pins -std=c++17, but torch >= 2.10 headers
#    need C++20, so the sdist is patched before building. The built wheel is kept in a cache
#    keyed by the torch version (pip's own cache is keyed by the sdist only), so a torch
#    change rebuilds it; a wheel there is used only if it is this Python's (its cp tag).
STAMP="$VENV/.mmcv-built-for-torch"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$TORCH_VERSION" ] || ! "$PY" -c "import mmcv.ops" 2>/dev/null; then
  # wheel 0.48 still provides bdist_wheel for setuptools < 70.1, which mmcv's build needs
  pip_install "setuptools<70" ninja "wheel<0.49"
  WHEELS="${HGKD_CACHE:-$HOME/.cache/hgkd_mm}/mmcv-2.1.0-torch-$TORCH_VERSION"
  PYTAG="$("$PY" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')"  # e.g. cp311
  if ! ls "$WHEELS"/mmcv-2.1.0-"$PYTAG"-*.whl >/dev/null 2>&1; then
    echo "[install] building mmcv 2.1.0 with ops for torch $TORCH_VERSION (15-20 minutes on 2 cores)"
    BUILD="$(mktemp -d)"
    trap 'rm -rf "$BUILD"' EXIT  # a failed build leaves no sources behind
    "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: mmcv==2.1.0 -d "$BUILD"
    tar -xzf "$BUILD"/mmcv-2.1.0.tar.gz -C "$BUILD"
    sed -i "s/'-std=c++17'/'-std=c++20'/" "$BUILD"/mmcv-2.1.0/setup.py
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" "$PY" -m pip wheel --disable-pip-version-check -q \
      --no-build-isolation --no-deps "$BUILD"/mmcv-2.1.0 -w "$BUILD/dist"
    mkdir -p "$WHEELS"  # the cache gets the wheel only once it is whole
    mv "$BUILD"/dist/mmcv-2.1.0-*.whl "$WHEELS"/
    rm -rf "$BUILD"
    trap - EXIT
  fi
  pip_install --force-reinstall --no-deps "$WHEELS"/mmcv-2.1.0-"$PYTAG"-*.whl
  echo "$TORCH_VERSION" > "$STAMP"
fi

# 3. OpenMMLab packages (pinned), COCO API, test tools; a no-op when satisfied.
echo "[install] mmengine, mmpretrain, mmdet, mmsegmentation, pycocotools, timm, pytest"
pip_install -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt"

# 4. spconv: the CPU build without a GPU, else the CUDA build for torch's CUDA
#    (hgkd_mm/utils/spconv_build.py decides). Builds do not mix: another spconv
#    or cumm build already there is removed first.
SPCONV_REQ="$("$PY" "$ROOT/hgkd_mm/utils/spconv_build.py")"  # e.g. spconv==2.3.8
SPCONV="${SPCONV_REQ%%==*}"
if ! "$PY" -m pip show -q "$SPCONV" >/dev/null 2>&1 || ! "$PY" -c "import spconv.pytorch" 2>/dev/null; then
  OTHERS="$("$PY" -m pip list --format=freeze 2>/dev/null | cut -d= -f1 | grep -Ei '^(spconv|cumm)' || true)"
  if [ -n "$OTHERS" ]; then
    echo "[install] removing other spconv/cumm builds: $(echo $OTHERS)"
    "$PY" -m pip uninstall -y -q $OTHERS
  fi
  echo "[install] $SPCONV_REQ"
  pip_install "$SPCONV_REQ"
fi

# 5. hgkd_mm itself, editable. Checked from / : `python -c` puts the current directory on
#    import path, so a check run in the repository would pass without an install.
if ! (cd / && "$PY" -c "import hgkd_mm, os, sys; sys.exit(os.path.dirname(os.path.dirname(os.path.realpath(hgkd_mm.__file__))) != os.path.realpath(sys.argv[1]))" "$ROOT") 2>/dev/null; then
  pip_install --no-deps --no-build-isolation -e "$ROOT"
fi
echo "[install] ready: $VENV (torch $TORCH_VERSION)"
