#!/usr/bin/env bash
# H-GKD training-step benchmark on one GPU machine without registry access: installs the
# wheels in wheels/ (fill it first with dev/download_gpu_wheels.sh), installs this repo and
# times the paper config against "mmpretrain SparK step + teacher forward".
#
#   bash dev/gpu_bench.sh      # JSON and logs to $OUT or work_dirs/bench
#
# Each compiled run compiles ResNet-50's step again (a minute or more). With a time limit
# per call, set DEADLINE a little under it: no run starts after DEADLINE seconds, a run
# still going then is stopped, and the runs done are kept (each run's JSON is written as
# soon as its steps are timed, before the breakdown and the profile). RUNS is in order of
# importance: the default first. Where only a few files come back from the machine, set
# BUNDLE to a .tgz there and OUT elsewhere,
#   BUNDLE=$OUT/bench1.tgz OUT=/tmp/bench1 DEADLINE=560 ITERS=10 WARMUP=3 bash dev/gpu_bench.sh
# and the script packs OUT into BUNDLE after each run (so a killed call keeps the runs
# done before). Runs without a backend in their name use the config's (packed);
# masked_* and *_triton* (the Triton kernels are the masked backend's norms) use backend
# masked. Compiled runs use the config's CUDA graphs (model.cuda_graphs) unless their
# name ends in _nographs (torch.compile's default mode), and the config's channels-last
# student and compiled teacher unless their name says otherwise: compiled_plain has
# neither, compiled_cl only channels-last, compiled_teacher only the compiled teacher,
# eager_nchw and eager_triton are NCHW. Options are compared with the run they change,
# from the same call (same machine). train_check times nothing: it runs tools/train.py
# with the config on generated images (dev/train_check.py: the default step trains and
# resumes in mmengine's Runner, and refuses gradient accumulation under CUDA graphs);
# triton_check tests the Triton norms (dev/triton_norm_check.py).
# At the end, tools/analysis_tools/bench_table.py prints the rows of this call's runs for
# docs/benchmarks.md, with each profiled run's top ops.
#
# Environment: PYTHON (python3), CONFIG (configs/pretrain/hgkd_r50.py), BATCH (128),
# ITERS (20), WARMUP (5), OUT, PROFILE (1: each run also writes a torch.profiler op table,
# 3 more steps; 0: off), RUNS (in order; see the case list below), BUNDLE (a .tgz path
# outside OUT, refreshed with OUT's files after each run), DEADLINE (seconds from the
# start; 0: none), RUN_TIMEOUT (seconds per run; 0: none).
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
CONFIG=${CONFIG:-configs/pretrain/hgkd_r50.py}
BATCH=${BATCH:-128}
ITERS=${ITERS:-20}
WARMUP=${WARMUP:-5}
OUT=${OUT:-work_dirs/bench}
PROFILE=${PROFILE:-1}
RUNS=${RUNS:-compiled train_check eager compiled_cl compiled_teacher compiled_plain \
eager_nchw masked_compiled compiled_nographs triton_check eager_triton masked_eager}
BUNDLE=${BUNDLE:-}
DEADLINE=${DEADLINE:-0}
RUN_TIMEOUT=${RUN_TIMEOUT:-0}
export PYTHONUNBUFFERED=1  # a stopped run's output is not lost in a buffer
KNOWN_RUNS=" triton_check train_check compiled eager eager_nchw masked_compiled masked_eager \
eager_triton eager_triton_cl compiled_cl compiled_teacher compiled_plain compiled_nographs \
masked_nographs compiled_cudagraphs compiled_combo compiled_autotune compiled_lamb compiled_adamw \
teacher_masked spconv_eager "
if [[ "$PROFILE" != 0 && "$PROFILE" != 1 ]]; then  # before installing anything
  echo "PROFILE must be 0 or 1, got '$PROFILE'" >&2
  exit 2
fi
for setting in DEADLINE RUN_TIMEOUT; do
  if [[ ! "${!setting}" =~ ^[0-9]+$ ]]; then
    echo "$setting must be a number of seconds (0: none), got '${!setting}'" >&2
    exit 2
  fi
done
for name in $RUNS; do  # before installing anything: device time is scarce
  if [[ "$KNOWN_RUNS" != *" $name "* ]]; then
    echo "RUNS: unknown run '$name' (known:$KNOWN_RUNS)" >&2
    exit 2
  fi
done
if [[ -n "$BUNDLE" && ( "$BUNDLE" != *.tgz ||
      "$(realpath -m "$BUNDLE")" == "$(realpath -m "$OUT")"/* ) ]]; then
  echo "BUNDLE must be a .tgz path outside OUT ($OUT), got '$BUNDLE'" >&2
  exit 2
fi
mkdir -p "$OUT"
bundle() {  # OUT's files into BUNDLE, replaced whole: a killed call keeps the last one
  [[ -z "$BUNDLE" ]] && return
  tar czf "$BUNDLE.part" -C "$OUT" . && mv "$BUNDLE.part" "$BUNDLE"
}

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
bundle

timer=()
start_run() {  # name: false when DEADLINE leaves no time; sets timer, the run's time limit
  local limit=$RUN_TIMEOUT left
  if (( DEADLINE > 0 )); then
    left=$(( DEADLINE - SECONDS ))
    if (( left < 30 )); then
      echo "=== $1 skipped: DEADLINE=$DEADLINE s reached (${SECONDS} s)"
      return 1
    fi
    (( limit == 0 || left < limit )) && limit=$left
  fi
  timer=()
  (( limit > 0 )) && timer=(timeout -k 10 "$limit")
  echo "=== $1${timer[*]:+ (at most $limit s)}"
}

run() {  # name, extra options
  local name=$1
  shift
  local profile=()
  [[ "$PROFILE" == 1 ]] && profile=(--profile "$OUT/$name.profile.txt")
  "${timer[@]}" "$PY" tools/analysis_tools/benchmark_pretrain.py "$CONFIG" --device cuda \
    --amp --compare-spark --breakdown --batch-size "$BATCH" --iters "$ITERS" \
    --warmup "$WARMUP" --out "$OUT/$name.json" "${profile[@]}" "$@" 2>&1 \
    | tee "$OUT/$name.log"
  local status=${PIPESTATUS[0]}
  (( status == 0 )) || echo "=== $name: exit status $status (124: stopped by the time limit)" \
    | tee -a "$OUT/$name.log"
}

check() {  # name, script and arguments: a check's output and exit status in OUT/name.log
  local name=$1
  shift
  "${timer[@]}" "$PY" "$@" 2>&1 | tee "$OUT/$name.log"
  echo "=== $name: exit status ${PIPESTATUS[0]}" | tee -a "$OUT/$name.log"
}

for name in $RUNS; do
  start_run "$name" || continue
  case $name in
    triton_check)  # the Triton masked norm against the torch one, on this GPU
      check triton_check dev/triton_norm_check.py cuda ;;
    train_check)  # the default step in tools/train.py: trains, resumes, refuses accumulation
      check train_check dev/train_check.py --epochs 1 \
        --out "$OUT/train_check_report.json" ;;
    compiled) run compiled ;;  # the default on CUDA: compiled student + teacher, CUDA graphs
    eager) run eager --no-compile ;;  # channels-last, as the config
    eager_nchw) run eager_nchw --no-compile --no-channels-last ;;
    masked_compiled) run masked_compiled --backend masked ;;
    masked_eager) run masked_eager --backend masked --no-compile ;;
    compiled_nographs) run compiled_nographs --compile-mode default ;;
    masked_nographs) run masked_nographs --backend masked --compile-mode default ;;
    eager_triton)
      run eager_triton --backend masked --no-compile --norm-impl triton --no-channels-last ;;
    eager_triton_cl)
      run eager_triton_cl --backend masked --no-compile --norm-impl triton --channels-last ;;
    compiled_cl) run compiled_cl --channels-last --no-compile-teacher ;;  # no cuDNN NCHW<->NHWC
    compiled_teacher)  # the teacher in the student's compiled function (one CUDA graph)
      run compiled_teacher --no-channels-last --compile-teacher ;;
    compiled_plain) run compiled_plain --no-channels-last --no-compile-teacher ;;
    compiled_cudagraphs) run compiled_cudagraphs --compile-mode reduce-overhead ;;
    compiled_combo) run compiled_combo --channels-last --compile-teacher ;;
    compiled_autotune)  # inductor benchmarks kernel choices: compiling takes minutes
      run compiled_autotune --compile-mode max-autotune-no-cudagraphs ;;
    compiled_lamb)  # mmpretrain's per-parameter Lamb on both sides
      run compiled_lamb --cfg-options optim_wrapper.optimizer.type=Lamb ;;
    compiled_adamw)  # fused AdamW on both sides
      run compiled_adamw --cfg-options optim_wrapper.optimizer.type=AdamW ;;
    teacher_masked) run teacher_masked --teacher-input-mode masked --no-compile ;;  # vs eager
    spconv_eager)                               # vs eager
      if "$PY" -c "import spconv.pytorch" 2> /dev/null; then
        run spconv_eager --backend spconv --no-compile
      else
        echo "spconv_eager skipped: spconv (spconv-cu126) is not installed"
      fi ;;
    *) echo "RUNS: '$name' is in KNOWN_RUNS but has no case here" >&2; exit 2 ;;
  esac
  bundle
done
echo "results in $OUT${BUNDLE:+ and $BUNDLE}"
jsons=()
for name in $RUNS; do [[ -f "$OUT/$name.json" ]] && jsons+=("$OUT/$name.json"); done
if (( ${#jsons[@]} )); then
  "$PY" tools/analysis_tools/bench_table.py --top 12 "${jsons[@]}" | tee "$OUT/table.md"
fi
bundle
