"""A short ``tools/train.py`` run of a pretraining config on generated images: does its
default step train in mmengine's Runner on this machine (on a GPU: compiled, in CUDA
graphs), save and resume checkpoints, and refuse gradient accumulation under CUDA graphs?

    python dev/train_check.py [CONFIG] [--images N] [--batch-size N]
        [--epochs N] [--work-dir DIR] [--out JSON] [--cfg-options KEY=VALUE ...]

Three runs of ``tools/train.py`` with the config's model and pipeline, the teacher without
its checkpoint (random) and ``--images`` random images: train ``--epochs`` epochs;
``--resume`` for one more; with CUDA graphs in use, once more with
``optim_wrapper.accumulative_counts=2``, which must stop with the model's error. Exits 1
if a check fails. ``--cfg-options`` go to every run (e.g. ``model.channels_last=True``).
It times nothing: speed is ``tools/analysis_tools/benchmark_pretrain.py``'s.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from hgkd_mm.utils.cli import dump_json, json_path, positive_int

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

GRAPHS_ON = re.compile(r'H-GKD student step: compiled with .*, CUDA graphs on')
LOSS = re.compile(r'Epoch\(train\).*?\sloss: ([0-9.naninf]+)')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=' '.join(__doc__.split('\n\n')[0].split()))
    parser.add_argument('config', nargs='?', default='configs/pretrain/hgkd_r50.py')
    parser.add_argument('--images', type=positive_int, default=96)
    parser.add_argument('--batch-size', type=positive_int, default=32)
    parser.add_argument('--epochs', type=positive_int, default=2)
    parser.add_argument('--work-dir', help='default: a new temporary folder')
    parser.add_argument('--out', type=json_path, help='write the result as JSON here')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help="tools/train.py's --cfg-options, for every run")
    args = parser.parse_args(argv)
    for option in args.cfg_options:
        if '=' not in option:
            parser.error(f'--cfg-options: {option!r} is not KEY=VALUE')
    if not osp.isfile(args.config):
        parser.error(f'config: no file {args.config}')
    if args.work_dir and osp.exists(args.work_dir) and (
            not osp.isdir(args.work_dir) or os.listdir(args.work_dir)):
        parser.error(f'--work-dir {args.work_dir}: give a new or empty folder (the checks '
                     'read the checkpoints the runs leave there)')
    if args.images < args.batch_size:
        parser.error(f'--images {args.images} gives no full batch of --batch-size '
                     f'{args.batch_size} (the H-GKD configs drop the last partial one)')
    return args


def make_images(folder: str, count: int, size: int = 256) -> None:
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(osp.join(folder, f'{i:04d}.png'))


def check_config(config: str, images: str, batch_size: int, epochs: int, path: str) -> None:
    """A config over ``config``: its pipeline on ``images``, a random teacher."""
    from mmengine.config import Config
    pipeline = Config.fromfile(config).to_dict()['train_dataloader']['dataset']['pipeline']
    with open(path, 'w') as f:
        f.write(f"""_base_ = [{osp.abspath(config)!r}]
train_dataloader = dict(
    batch_size={batch_size}, num_workers=2, persistent_workers=False, drop_last=True,
    dataset=dict(_delete_=True, type='CustomDataset', data_root={images!r},
                 with_label=False, pipeline={pipeline!r}))
model = dict(teacher=dict(checkpoint=None))
train_cfg = dict(max_epochs={epochs})
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=-1))
""")


def train(config: str, work_dir: str, *options: str, cfg_options=()) -> dict:
    """One ``tools/train.py`` run: its exit status, seconds, logged losses, output tail."""
    start = time.time()
    cfg = ['--cfg-options', *cfg_options] if cfg_options else []  # one list: a second
    result = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), config,
                             '--work-dir', work_dir, *options, *cfg], cwd=ROOT,  # replaces
                            capture_output=True, text=True)
    output = result.stdout + result.stderr
    return dict(rc=result.returncode, seconds=round(time.time() - start, 1),
                losses=[float(v) for v in LOSS.findall(output)],
                cuda_graphs=bool(GRAPHS_ON.search(output)), tail=output[-2000:])


def main(argv=None) -> dict:
    args = parse_args(argv)
    work_dir = osp.abspath(args.work_dir or tempfile.mkdtemp(prefix='train_check_'))
    images = osp.join(work_dir, 'images')
    make_images(images, args.images)
    config = osp.join(work_dir, 'train_check_config.py')
    check_config(args.config, images, args.batch_size, args.epochs, config)
    runs = osp.join(work_dir, 'runs')

    report = dict(config=args.config, images=args.images, batch_size=args.batch_size,
                  epochs=args.epochs, work_dir=work_dir, cfg_options=args.cfg_options)
    report['train'] = first = train(config, runs, cfg_options=args.cfg_options)
    last = osp.join(runs, f'epoch_{args.epochs}.pth')
    report['checks'] = checks = dict(
        trained=first['rc'] == 0 and osp.isfile(last),
        finite_losses=bool(first['losses']) and all(np.isfinite(first['losses'])))
    report['resume'] = resumed = train(
        config, runs, '--resume', last,
        cfg_options=[*args.cfg_options, f'train_cfg.max_epochs={args.epochs + 1}'])
    checks['resumed'] = (resumed['rc'] == 0
                         and osp.isfile(osp.join(runs, f'epoch_{args.epochs + 1}.pth')))
    report['cuda_graphs'] = first['cuda_graphs']
    if first['cuda_graphs']:  # the refusal only applies under CUDA graphs
        report['accumulation'] = refused = train(
            config, osp.join(work_dir, 'accumulate'),
            cfg_options=[*args.cfg_options, 'optim_wrapper.accumulative_counts=2'])
        checks['accumulation_refused'] = (refused['rc'] != 0
                                          and 'accumulative_counts' in refused['tail'])
    report['ok'] = all(checks.values())
    for name in ('train', 'resume', 'accumulation'):
        if name in report:
            run = report[name]
            print(f"{name}: exit {run['rc']} in {run['seconds']} s, losses {run['losses']}")
    print(f"CUDA graphs {'on' if report['cuda_graphs'] else 'off'}; checks: {checks}")
    if args.out:
        dump_json(args.out, report, indent=2)
    if not report['ok']:
        for name in ('train', 'resume', 'accumulation'):
            if name in report:
                print(f"--- {name} output (end) ---\n{report[name]['tail']}", file=sys.stderr)
        sys.exit(1)
    return report


if __name__ == '__main__':
    main()
