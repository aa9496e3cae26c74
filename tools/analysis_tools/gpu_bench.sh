#!/usr/bin/env bash
# H-GKD training-step benchmark on one GPU machine without registry access: installs the
# wheels in wheels/ (fill it first with download_gpu_wheels.sh), installs this repo and
# times the paper config against "mmpretrain SparK step + teacher forward".
#
#   bash tools/analysis_tools/gpu_bench.sh      # JSON and logs to $OUT or work_dirs/bench
#
# Environment: PYTHON (python3), CONFIG (configs/pretrain/hgkd_r50.py), BATCH (128),
# ITERS (20), WARMUP (5), OUT, RUNS (eager compiled teacher_masked spconv_eager; also
# compiled_lamb, compiled_adamw, channels_last).
set -uo pipefail
cd "$(dirname "$0")/../.."

PY=${PYTHON:-python3}
CONFIG=${CONFIG:-configs/pretrain/hgkd_r50.py}
BATCH=${BATCH:-128}
ITERS=${ITERS:-20}
WARMUP=${WARMUP:-5}
OUT=${OUT:-work_dirs/bench}
RUNS=${RUNS:-eager compiled teacher_masked spconv_eager}
KNOWN_RUNS=" compiled eager compiled_lamb compiled_adamw channels_last teacher_masked spconv_eager "
for name in $RUNS; do  # before installing anything: device time is scarce
  if [[ "$KNOWN_RUNS" != *" $name "* ]]; then
    echo "RUNS: unknown run '$name' (known:$KNOWN_RUNS)" >&2
    exit 2
  fi
done
mkdir -p "$OUT"

if compgen -G "wheels/*.whl" > /dev/null; then
  "$PY" -m pip install --no-index --no-deps wheels/*.whl || exit 1
fi
# no registry: no build isolation; without setuptools, import the repo from its path
if ! "$PY" -m pip install --no-index --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1; then
  echo "pip install -e . failed (see $OUT/install.log): using PYTHONPATH" >&2
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import hgkd_mm, mmpretrain, torch; print('hgkd_mm', hgkd_mm.__version__, 'mmpretrain', \
mmpretrain.__version__, 'torch', torch.__version__, torch.cuda.get_device_name())" || exit 1
{ nvidia-smi; "$PY" -m pip list 2>/dev/null; } > "$OUT/env.txt" 2>&1

run() {  # name, extra options
  local name=$1
  shift
  echo "=== $name"
  "$PY" tools/analysis_tools/benchmark_pretrain.py "$CONFIG" --device cuda --amp \
    --compare-spark --batch-size "$BATCH" --iters "$ITERS" --warmup "$WARMUP" \
    --out "$OUT/$name.json" "$@" 2>&1 | tee "$OUT/$name.log"
}

for name in $RUNS; do
  case $name in
    compiled) run compiled ;;                  # default on CUDA: student under torch.compile
    eager) run eager --no-compile ;;
    compiled_lamb)  # mmpretrain's per-parameter Lamb on both sides
      run compiled_lamb --cfg-options optim_wrapper.optimizer.type=Lamb ;;
    compiled_adamw)  # fused AdamW on both sides, as ../shared/docs/anchors.md
      run compiled_adamw --cfg-options optim_wrapper.optimizer.type=AdamW ;;
    channels_last) run channels_last --channels-last ;;
    teacher_masked) run teacher_masked --teacher-input-mode masked --no-compile ;;  # vs eager
    spconv_eager)                               # vs eager
      if "$PY" -c "import spconv.pytorch" 2> /dev/null; then
        run spconv_eager --backend spconv --no-compile
      else
        echo "=== spconv_eager skipped: spconv (spconv-cu126) is not installed"
      fi ;;
  esac
done
echo "results in $OUT"
