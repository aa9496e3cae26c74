"""tools/dist_train.sh with 2 CPU processes (torchrun + gloo), SyncBN in the config; and
tools/slurm_train.sh through stand-in `srun`/`scontrol` commands that start the tasks
locally with slurm's environment."""
import os
import stat

import pytest
import torch

from helpers import ITERS_2, free_port, run_tool, write_cls_config

# These launch 2 processes: on CPU with gloo; a CUDA machine needs a GPU for each.
pytestmark = pytest.mark.skipif(
    torch.cuda.is_available() and torch.cuda.device_count() < 2,
    reason='2 processes need 2 GPUs on a CUDA machine')

# Records its arguments, then starts --ntasks copies of the command with SLURM_* set.
FAKE_SRUN = """#!/usr/bin/env bash
echo "$*" > "$SRUN_RECORD"
NTASKS=1
while [ $# -gt 0 ]; do
  case "$1" in
    -p) shift 2 ;;
    --ntasks=*) NTASKS="${1#--ntasks=}"; shift ;;
    -*) shift ;;
    *) break ;;
  esac
done
pids=()
for ((i = 0; i < NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NTASKS=$NTASKS SLURM_NODELIST=node0 "$@" &
  pids+=($!)
done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
exit $rc
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
[ "$*" = "show hostname node0" ] && echo 127.0.0.1
"""


def test_dist_train_sh_two_cpu_processes(tmp_path, image_folder):
    config = write_cls_config(tmp_path / 'tiny_cls_syncbn.py', image_folder, ITERS_2)
    work_dir = tmp_path / 'work'
    result = run_tool(['tools/dist_train.sh', config, 2, '--work-dir', work_dir,
                       '--cfg-options', 'default_hooks.checkpoint.by_epoch=False'], check=True)
    log = result.stdout + result.stderr
    assert 'Distributed training: True' in log
    assert 'model.backbone.norm_cfg.type=SyncBN' in log  # the replacement warning
    assert log.count('model.backbone.norm_cfg.type=SyncBN') == 1  # rank 0 only
    assert (work_dir / 'iter_2.pth').exists()


def test_slurm_train_sh_two_tasks(tmp_path, image_folder, monkeypatch):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name, text in (('srun', FAKE_SRUN), ('scontrol', FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755 | stat.S_IEXEC)
    record = tmp_path / 'srun_args.txt'
    monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
    monkeypatch.setenv('SRUN_RECORD', str(record))
    monkeypatch.setenv('MASTER_PORT', str(free_port()))
    config = write_cls_config(tmp_path / 'tiny_cls_syncbn.py', image_folder, ITERS_2)
    work_dir = tmp_path / 'work'
    result = run_tool(['tools/slurm_train.sh', 'gpu_part', 'hgkd_job', config, work_dir, 2,
                       '--cfg-options', 'default_hooks.checkpoint.by_epoch=False'], check=True)
    log = result.stdout + result.stderr
    srun_args = record.read_text().split()
    assert srun_args[:3] == ['-p', 'gpu_part', '--job-name=hgkd_job']
    assert {'--ntasks=2', '--ntasks-per-node=2', '--gres=gpu:2'} <= set(srun_args)
    assert f'--work-dir={work_dir}' in srun_args and '--launcher=slurm' in srun_args
    assert 'Distributed training: True' in log
    assert (work_dir / 'iter_2.pth').exists()
