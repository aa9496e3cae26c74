#!/usr/bin/env bash
# Usage: tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [GPUS] [train.py args]
# GPUS (total processes) is the 5th argument when it is a number, else env GPUS (8).
# Env: GPUS_PER_NODE (min(GPUS, 8)), CPUS_PER_TASK (5), SRUN_ARGS, PYTHON.
if [ $# -lt 4 ] || [ -z "$4" ]; then
    echo "usage: tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [GPUS] [train.py args]" >&2
    echo "WORK_DIR must be given (checkpoints and logs go there)" >&2
    exit 2
fi
if [[ "${5:-}" =~ ^[0-9]+$ ]]; then GIVEN=$5; else GIVEN=${GPUS:-8}; fi
if [[ ! "$GIVEN" =~ ^[1-9][0-9]*$ ]]; then
    echo "GPUS (total processes) must be a positive integer, got '$GIVEN'" >&2
    exit 2
fi
set -x

PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
if [[ "${5:-}" =~ ^[0-9]+$ ]]; then
    GPUS=$5
    PY_ARGS=("${@:6}")
else
    GPUS=${GPUS:-8}
    PY_ARGS=("${@:5}")
fi
GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 8 ? GPUS : 8))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python
    [ -x "${HGKD_VENV:-$ROOT/.venv}/bin/python" ] && PYTHON="${HGKD_VENV:-$ROOT/.venv}/bin/python"
fi

PYTHONPATH="$ROOT":$PYTHONPATH \
srun -p "${PARTITION}" \
    --job-name="${JOB_NAME}" \
    --gres=gpu:"${GPUS_PER_NODE}" \
    --ntasks="${GPUS}" \
    --ntasks-per-node="${GPUS_PER_NODE}" \
    --cpus-per-task="${CPUS_PER_TASK}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "$PYTHON" -u "$ROOT/tools/train.py" "${CONFIG}" --work-dir="${WORK_DIR}" --launcher="slurm" "${PY_ARGS[@]}"
