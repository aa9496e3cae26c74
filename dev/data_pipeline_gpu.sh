#!/usr/bin/env bash
# The paper config's Runner loop on real JPEGs on one GPU machine, for each loader, beside
# the bare step of the same call: tools/analysis_tools/benchmark_pretrain.py CONFIG --data.
#
#   bash dev/data_pipeline_gpu.sh prepare        # here: JPEGs + the simplejpeg wheel
#   bash dev/data_pipeline_gpu.sh run            # there (after dev/gpu_bench.sh's install)
#
# prepare (on a machine with ../shared/data and a registry) writes work_dirs/jpegs: the
# 100 COCO photos of coco-tiny (real, full size, ~530 px, ~150 KB) and imagenet-sample
# photos enlarged to COCO's size (short side 480, quality 90) up to MIB MiB in all (50),
# and puts simplejpeg's wheel for the GPU machine's Python 3.12 into wheels/. Carry
# work_dirs/jpegs and wheels to the GPU machine (64 MiB at most together).
# run installs wheels/ and this repository as dev/gpu_bench.sh does, then times, in order,
# each of LOADERS: fast (configs/pretrain/hgkd_r50.py: LoadRandomResizedCrop), gpu
# (hgkd_r50_gpu-decode.py: nvJPEG in the data preprocessor), mmpretrain (hgkd_r50.py with
# mmpretrain's LoadImageFromFile + RandomResizedCrop). Each run times the bare step, the
# loader per worker and the Runner loop with WORKERS workers; the JSON files go to OUT and
# a table of Runner / step ratios is printed at the end.
# Environment: PYTHON (python3), BATCH (128), ITERS (20), WARMUP (5), WORKERS (16),
# LOADERS ("fast gpu mmpretrain"), OUT (work_dirs/data_bench), DATA (work_dirs/jpegs),
# MIB (50), RUN_TIMEOUT (seconds per loader; 0: none), SRC (../shared/data: prepare's
# photos). The settings are checked before anything is installed or written.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
BATCH=${BATCH:-128}
ITERS=${ITERS:-20}
WARMUP=${WARMUP:-5}
WORKERS=${WORKERS:-16}
LOADERS=${LOADERS:-fast gpu mmpretrain}
OUT=${OUT:-work_dirs/data_bench}
DATA=${DATA:-work_dirs/jpegs}
MIB=${MIB:-50}
RUN_TIMEOUT=${RUN_TIMEOUT:-0}
SRC=${SRC:-../shared/data}
export PYTHONUNBUFFERED=1
KNOWN_LOADERS=" fast gpu mmpretrain "

fail() { echo "$*" >&2; exit 2; }

check_settings() {
  local name
  for name in BATCH ITERS WORKERS; do
    [[ "${!name}" =~ ^[1-9][0-9]*$ ]] || fail "$name must be a positive integer, got '${!name}'"
  done
  [[ "$WARMUP" =~ ^[0-9]+$ ]] || fail "WARMUP must be a non-negative integer, got '$WARMUP'"
  [[ "$RUN_TIMEOUT" =~ ^[0-9]+$ ]] \
    || fail "RUN_TIMEOUT must be a number of seconds (0: none), got '$RUN_TIMEOUT'"
  [[ "$MIB" =~ ^[1-9][0-9]*$ ]] || fail "MIB must be a positive integer, got '$MIB'"
  [[ -n "${LOADERS// }" ]] || fail "LOADERS is empty (fast, gpu, mmpretrain)"
  for name in $LOADERS; do
    [[ "$KNOWN_LOADERS" == *" $name "* ]] \
      || fail "LOADERS: unknown loader '$name' (fast, gpu, mmpretrain)"
  done
}

prepare() {
  [[ -d "$SRC/coco-tiny" && -d "$SRC/imagenet-sample" ]] \
    || fail "SRC=$SRC: no coco-tiny and imagenet-sample folders in it"
  "$PY" - "$DATA" "$MIB" "$SRC" <<'EOF'
import glob, os, shutil, sys
from PIL import Image
out, limit, src = sys.argv[1], float(sys.argv[2]) * 2**20, sys.argv[3]
os.makedirs(out, exist_ok=True)
total = 0
for path in sorted(glob.glob(f'{src}/coco-tiny/*2017/*.jpg')):
    shutil.copy(path, out)
    total += os.path.getsize(path)
for path in sorted(glob.glob(f'{src}/imagenet-sample/*/*.JPEG')
                   + glob.glob(f'{src}/imagenet-sample/*/*.jpg')):
    image = Image.open(path).convert('RGB')
    scale = 480 / min(image.size)
    target = os.path.join(out, 'in_' + os.path.basename(path).rsplit('.', 1)[0] + '.jpg')
    image.resize((round(image.width * scale), round(image.height * scale)),
                 Image.BICUBIC).save(target, quality=90)
    total += os.path.getsize(target)
    if total > limit:
        os.remove(target)
        break
print(f'{len(os.listdir(out))} JPEGs, {total / 2**20:.1f} MiB in {out}')
EOF
  mkdir -p wheels
  "$PY" -m pip download --no-deps --only-binary :all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 -d wheels simplejpeg
}

run() {
  [[ -d "$DATA" ]] && compgen -G "$DATA/*.jpg" > /dev/null \
    || fail "DATA=$DATA: no .jpg files in it (bash dev/data_pipeline_gpu.sh prepare makes them)"
  mkdir -p "$OUT"
  if compgen -G "wheels/*.whl" > /dev/null; then
    "$PY" -m pip install --no-index --no-deps wheels/*.whl > "$OUT/install.log" 2>&1
  fi
  "$PY" -m pip install --no-index --no-deps --no-build-isolation -e . >> "$OUT/install.log" 2>&1 \
    || export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  nvidia-smi > "$OUT/env.txt" 2>&1; nproc >> "$OUT/env.txt"
  cat > "$OUT/hgkd_r50_mmpretrain-loader.py" <<EOF
_base_ = '$PWD/configs/pretrain/hgkd_r50.py'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, crop_ratio_range=(0.67, 1.0), backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
EOF
  for loader in $LOADERS; do
    case $loader in
      fast) config=configs/pretrain/hgkd_r50.py ;;
      gpu) config=configs/pretrain/hgkd_r50_gpu-decode.py ;;
      mmpretrain) config=$OUT/hgkd_r50_mmpretrain-loader.py ;;
      *) fail "LOADERS: '$loader' is in KNOWN_LOADERS but has no case here" ;;
    esac
    limit=()
    [[ "$RUN_TIMEOUT" != 0 ]] && limit=(timeout "$RUN_TIMEOUT")
    echo "== $loader: $config"
    "${limit[@]}" "$PY" tools/analysis_tools/benchmark_pretrain.py "$config" \
      --batch-size "$BATCH" --iters "$ITERS" --warmup "$WARMUP" --workers "$WORKERS" \
      --data "$DATA" --out "$OUT/$loader.json" 2>&1 | tee "$OUT/$loader.log" | grep -v INFO
  done
  "$PY" - "$OUT" $LOADERS <<'EOF'
import json, os, sys
print(f"{'loader':12s} {'step img/s':>11s} {'Runner img/s':>13s} {'Runner/step':>12s} "
      f"{'data wait':>10s} {'worker img/s':>13s}")
for loader in sys.argv[2:]:
    try:  # a run stopped by RUN_TIMEOUT or an error has no JSON, or none with 'data'
        with open(os.path.join(sys.argv[1], loader + '.json')) as f:
            data = json.load(f)['data']
    except (OSError, ValueError, KeyError):
        print(f'{loader:12s} (no result)')
        continue
    print(f"{loader:12s} {data['step_img_per_s']:11.0f} {data['runner']['img_per_s']:13.0f} "
          f"{data['runner_vs_step']:12.3f} {data['runner']['data_wait']:10.1%} "
          f"{data['loader']['config']['img_per_s']:13.0f}")
EOF
}

case ${1:-} in
  prepare) check_settings; prepare ;;
  run) check_settings; run ;;
  *) fail "usage: bash dev/data_pipeline_gpu.sh prepare|run" ;;
esac
