"""Test a checkpoint with an mmpretrain/mmdet/mmseg config, like their ``tools/test.py``.

``--out`` and ``--show-dir`` follow the package named by the config's
``default_scope``: mmdet dumps ``DumpDetResults`` pickles, mmseg writes prediction
maps to a directory, anything else dumps mmengine ``DumpResults`` pickles.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from hgkd_mm.utils import (allow_mmengine_checkpoint_globals, check_data_paths,
                           close_process_group, merge_cfg_options, setup_launcher)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation metrics')
    parser.add_argument(
        '--out', help='dump predictions: a .pkl file (a directory for mmseg configs)')
    parser.add_argument('--show-dir', help='save visualized predictions in this dir')
    parser.add_argument('--show', action='store_true', help='show predictions in a window')
    parser.add_argument('--wait-time', type=float, default=2, help='seconds per shown image')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value (e.g. test_dataloader.batch_size=1)')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher')
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
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, args.show, args.show_dir, args.wait_time)
    if args.out and cfg.get('default_scope') == 'mmseg':
        cfg.test_evaluator.update(output_dir=args.out, keep_results=True)
    logger = cfg.get('default_hooks', {}).get('logger')
    if logger is not None and logger.get('type') in ('LoggerHook', 'mmengine.LoggerHook'):
        # every rank of mmengine's LoggerHook writes the metrics JSON (hgkd_mm/engine/hooks.py)
        logger.type = 'RankZeroLoggerHook'
    return cfg


def enable_visualization(cfg: Config, show: bool, show_dir: str | None,
                         wait_time: float) -> None:
    """Switch on the config's ``default_hooks.visualization`` the way its package does."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise RuntimeError('--show/--show-dir need `default_hooks.visualization` in the config')
    hook.update(show=show, wait_time=wait_time)
    scope = cfg.get('default_scope')
    if scope == 'mmpretrain':  # VisualizationHook
        hook.update(enable=True, out_dir=show_dir)
    elif scope == 'mmseg':  # SegVisualizationHook draws into the visualizer's save_dir
        hook.draw = True
        if show_dir:
            cfg.visualizer.save_dir = show_dir
    else:  # mmdet's DetVisualizationHook
        hook.update(draw=True, test_out_dir=show_dir)


def check_out(out: str | None, scope: str | None) -> None:
    """``--out`` before anything is built: a .pkl file, or a folder for mmseg configs."""
    if out and scope != 'mmseg' and not out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must be a .pkl file for this config, got {out}')
    if out and scope == 'mmseg' and osp.isfile(out):
        raise ValueError(f'--out {out} is a file: mmseg configs write one image per '
                         'prediction into a folder')


def add_dump_metric(runner: Runner, scope: str | None, out: str) -> None:
    """Append a metric that pickles every prediction to ``out``."""
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults as DumpResults
    else:
        from mmengine.evaluator import DumpResults
    runner.test_evaluator.metrics.append(DumpResults(out_file_path=out))


def main() -> None:
    args = parse_args()
    allow_mmengine_checkpoint_globals()
    cfg = merge_args(Config.fromfile(args.config), args)
    check_out(args.out, cfg.get('default_scope'))
    check_data_paths(cfg, ('test_dataloader',))
    setup_launcher(cfg, args.launcher)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if args.out and cfg.get('default_scope') != 'mmseg':
        add_dump_metric(runner, cfg.get('default_scope'), args.out)
    runner.test()
    close_process_group()


if __name__ == '__main__':
    main()
