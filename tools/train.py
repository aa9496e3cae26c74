"""Train with an mmpretrain/mmdet/mmseg config, like those packages' ``tools/train.py``.

The registry scope is the config's ``default_scope``; hgkd_mm's modules are
registered through the config's ``custom_imports``. Works on CPU-only machines too,
single process or ``--launcher pytorch`` with gloo (see ``tools/dist_train.sh``).
"""
from __future__ import annotations

import argparse
import logging
import os
import os.path as osp

import torch
from mmengine.config import Config, DictAction
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner
from torch.distributed.elastic.multiprocessing.errors import record

from hgkd_mm.engine import NonFiniteGuardHook, SkippedImagesHook
from hgkd_mm.utils import (allow_mmengine_checkpoint_globals, check_checkpoint_variable,
                           check_data_paths, check_resume_checkpoint, close_process_group,
                           merge_cfg_options, setup_launcher)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint, or, without a value, from the latest '
        'checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument(
        '--auto-scale-lr', action='store_true', help='scale the lr with the batch size')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value (e.g. train_cfg.max_epochs=2)')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank, older versions --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if args.work_dir is not None and not args.work_dir.strip():
        parser.error('--work-dir is empty: give a folder (an empty one would write to the '
                     'current directory)')
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command line to ``cfg`` (priority: CLI > config > config file name)."""
    if args.cfg_options is not None:
        merge_cfg_options(cfg, args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper_type not in ('OptimWrapper', 'AmpOptimWrapper'):
            raise ValueError(f'--amp does not support the optimizer wrapper {wrapper_type}')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if not torch.cuda.is_available() and cfg.get('optim_wrapper', {}).get(
            'type') == 'AmpOptimWrapper':
        # mmengine's AmpOptimWrapper asserts a GPU; train in float32 instead (the
        # pretraining configs ask for bf16 AMP)
        print_log('No CUDA: AmpOptimWrapper (--amp or the config) needs a GPU, training in '
                  'float32 with OptimWrapper', logger='current', level=logging.WARNING)
        cfg.optim_wrapper.type = 'OptimWrapper'
        for key in ('loss_scale', 'dtype', 'use_fsdp'):
            cfg.optim_wrapper.pop(key, None)

    if args.auto_scale_lr:
        if 'base_batch_size' not in (cfg.get('auto_scale_lr') or {}):
            raise RuntimeError('--auto-scale-lr needs `auto_scale_lr.base_batch_size` in '
                               'the config')
        cfg.auto_scale_lr.enable = True

    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def load_config(args: argparse.Namespace) -> Config:
    """The config file, checked before the command line changes it (a ``--cfg-options``
    that sets an init_cfg's checkpoint is not the file's mistake), then ``merge_args``."""
    cfg = Config.fromfile(args.config)
    check_checkpoint_variable(cfg)
    return merge_args(cfg, args)


def use_atomic_checkpoints(cfg: Config) -> None:
    """Save with hgkd_mm's ``AtomicCheckpointHook`` where the config names mmengine's
    ``CheckpointHook`` (its arguments are the same): checkpoints are then written
    atomically and the old ones deleted only after the new one is complete."""
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if isinstance(hook, dict) and hook.get('type') in ('CheckpointHook', CheckpointHook):
        hook['type'] = 'AtomicCheckpointHook'


def add_safety_hooks(cfg: Config) -> None:
    """Add ``NonFiniteGuardHook`` (stop at the first NaN/Inf loss or gradient norm) and
    ``SkippedImagesHook`` (count the images skipped as unreadable at each epoch's end)
    unless the config lists them (e.g. with ``max_skipped_steps``)."""
    hooks = cfg.setdefault('custom_hooks', [])
    for hook_class in (NonFiniteGuardHook, SkippedImagesHook):
        if not any(isinstance(hook, dict) and hook.get('type') in (hook_class.__name__,
                                                                  hook_class)
                   for hook in hooks):
            hooks.append(dict(type=hook_class.__name__))


def check_resume(cfg: Config) -> None:
    """Stop before building anything when the checkpoint to resume from does not load,
    naming it and the last readable checkpoint; pin an automatic resume to the file that
    ``last_checkpoint`` named when it was checked."""
    if not cfg.get('resume'):
        return
    checked = check_resume_checkpoint(cfg.work_dir, cfg.get('load_from'))
    if checked is not None:
        cfg.load_from = checked


@record  # under torchrun, a failing rank's exception is the job's reported root cause
def main() -> None:
    args = parse_args()
    allow_mmengine_checkpoint_globals()
    cfg = load_config(args)
    use_atomic_checkpoints(cfg)
    add_safety_hooks(cfg)
    check_resume(cfg)
    check_data_paths(cfg, ('train_dataloader', 'val_dataloader'))
    setup_launcher(cfg, args.launcher)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()
    close_process_group()


if __name__ == '__main__':
    main()
