"""H-GKD vs SparK vs no pre-training vs the teacher at one scale, end to end.

    python tools/analysis_tools/compare_pretraining.py [--work-dir work_dirs/compare]
        [--teacher CKPT [--teacher-config CFG]] [--img-size 96] [--mae-epochs 20]
        [--student-epochs 3] [--spark-epochs N] [--eval-split val|test] [--seeds 0 1 2]
        [--pretrain-seed N]
        [--finetune] [--ft-epochs 2] [--ft-seeds 0 1] [--pool-size N] [--probe-classes N]
        [--probe-per-class N] [--methods hgkd spark random teacher]
        [--hgkd-options KEY=VALUE ...] [--reuse-from WORK_DIR] [--smoke]

Data: the fixed caltech101 split of ``configs/splits/`` (:mod:`hgkd_mm.evaluation.splits`).
Pre-training uses only the pool (imagenet-sample + the split's train part); the probes fit
on the train part and report on ``--eval-split`` (``val`` while choosing, ``test`` once per
final model).

Stages (outputs under ``--work-dir``; a stage whose final checkpoint exists is skipped,
an interrupted one resumes from its last checkpoint):

1. ``pool.txt``: the unlabeled pre-training pool (``configs/splits/pool.txt``).
2. ``mae/``: mmpretrain's MAE pre-trains the ViT teacher
   (``configs/pretrain/mae_vit-tiny-p16_1xb64-15e_imagenet-sample-128px.py``), unless
   ``--teacher`` names one (e.g. the shipped ``checkpoints/mae_vit-tiny-p16_pool-96px.pth``).
3. ``hgkd/``: H-GKD distils it into a sparse ResNet-18
   (``configs/pretrain/hgkd_vit-tiny-p16_resnet18_1xb32-6e_imagenet-sample-128px.py``).
4. ``spark/``: mmpretrain's SparK pre-trains the same ResNet-18 on the same data, image
   size, batch and schedule, for ``--spark-epochs`` (default: the same steps)
   (``configs/pretrain/spark_resnet18_1xb32-6e_imagenet-sample-128px.py``).
5. ``probe/``: :mod:`hgkd_mm.evaluation.probe` linear probes (and with ``--finetune``,
   fine-tunes) the H-GKD student, the SparK student, a random ResNet-18 and the teacher.

Stages 2-4 run ``tools/train.py`` on configs generated in ``configs/`` of the work dir,
each ``_base_``-ing the repo config above and overriding data, image size, epochs and
batch size; the probes run in this process (images decoded once for all four models).
The table goes to ``results.md`` and ``results.json``. Learning rates scale linearly with
the batch size from the repo configs' values. Variants change only the H-GKD stage and
reuse the teacher (and SparK) of a finished run::

    python tools/analysis_tools/compare_pretraining.py --work-dir work_dirs/compare_loss_all \\
        --reuse-from work_dirs/compare --methods hgkd --hgkd-options model.head.loss_on=all

``--smoke`` runs every stage for two iterations on 8 images at 64 px and probes a
4-class subset (for tests).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import os.path as osp
import platform
import pprint
import subprocess
import sys
import time
from typing import Optional, Sequence

import torch
from mmengine.config import Config, DictAction

from hgkd_mm.evaluation import probe, splits, step_time
from hgkd_mm.utils.cli import dump_json, image_size, non_negative_int, positive_int

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DATA = osp.normpath(osp.join(ROOT, '..', 'shared', 'data'))
SHIPPED_TEACHER = osp.join(ROOT, 'checkpoints', 'mae_vit-tiny-p16_pool-96px.pth')
SHIPPED_TEACHER_CONFIG = 'configs/pretrain/mae_vit-tiny-p16_1xb64-40e_pool-96px.py'
BASE_CONFIGS = dict(
    mae='configs/pretrain/mae_vit-tiny-p16_1xb64-15e_imagenet-sample-128px.py',
    hgkd='configs/pretrain/hgkd_vit-tiny-p16_resnet18_1xb32-6e_imagenet-sample-128px.py',
    spark='configs/pretrain/spark_resnet18_1xb32-6e_imagenet-sample-128px.py')
METHODS = ('hgkd', 'spark', 'random', 'teacher')
SMOKE = dict(img_size=64, mae_epochs=1, student_epochs=1, mae_batch_size=4,
             student_batch_size=4, workers=0, pool_size=8, probe_classes=4,
             probe_per_class=6, seeds=[0], ft_epochs=1)


# ------------------------------------------------------------------------------- data
def write_pool(work_dir: str, limit: Optional[int] = None) -> tuple[str, int]:
    """``pool.txt``: the committed pre-training pool (``configs/splits/pool.txt``:
    imagenet-sample + the train part of the caltech101 split; ``limit``: an evenly
    spaced subset), paths relative to ``DATA``."""
    paths = splits.read_pool()
    missing = [p for p in paths[:1] + paths[-1:] if not osp.isfile(osp.join(DATA, p))]
    if missing:
        sys.exit(f'{osp.join(DATA, missing[0])} not found: the shared data is needed')
    if limit:
        paths = paths[::math.ceil(len(paths) / limit)][:limit]
    pool = osp.join(work_dir, 'pool.txt')
    with open(pool, 'w') as f:
        f.write('\n'.join(paths) + '\n')
    return pool, len(paths)


def probe_files(work_dir: str, eval_split: str, classes: Optional[int],
                per_class: Optional[int]) -> tuple[str, str]:
    """``(train, eval)`` ann files of the fixed caltech101 split: the train part, and the
    ``eval_split`` part (``val`` for choices, ``test`` once per final model); with
    ``classes``/``per_class`` a subset: ``classes`` evenly spaced classes (relabelled
    0..classes-1), the first ``per_class`` images of each (quick runs)."""
    files = []
    for part in ('train', eval_split):
        rows = splits.read_split(part)
        if classes or per_class:
            labels = sorted({label for _, label in rows})
            if classes and classes > len(labels):
                raise SystemExit(f'--probe-classes {classes}: the split has {len(labels)} '
                                 'classes')
            kept = labels[::len(labels) // classes if classes else 1][:classes]
            taken = {label: [] for label in kept}
            for path, label in rows:
                if label in taken and (per_class is None or len(taken[label]) < per_class):
                    taken[label].append(path)
            rows = [(path, kept.index(label)) for label in kept for path in taken[label]]
        path = osp.join(work_dir, f'probe_{part}_{classes or "all"}x{per_class or "all"}.txt')
        with open(path, 'w') as f:
            f.write(''.join(f'{p} {label}\n' for p, label in rows))
        files.append(path)
    return files[0], files[1]


# ---------------------------------------------------------------------------- configs
def lr_schedule(epochs: int, warmup: int) -> list:
    """Linear warm-up for ``warmup`` epochs, then cosine to the end (iteration-based)."""
    warmup = min(warmup, epochs)
    schedule = [dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup,
                     convert_to_iter_based=True)]
    if epochs > warmup:
        schedule.append(dict(type='CosineAnnealingLR', T_max=epochs - warmup, by_epoch=True,
                             begin=warmup, end=epochs, convert_to_iter_based=True))
    return schedule


def resized_pipeline(pipeline: list, img_size: int) -> list:
    """``pipeline`` with every ``RandomResizedCrop`` at ``img_size``."""
    return [dict(t, scale=img_size) if t['type'] == 'RandomResizedCrop' else t
            for t in pipeline]


def stage_overrides(base: Config, pool: str, img_size: int, epochs: int, batch_size: int,
                    workers: int) -> dict:
    """The overrides every stage shares: data, image size, batch, lr, schedule."""
    base_batch = base.train_dataloader.batch_size
    loader = dict(
        batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0,
        dataset=dict(data_root=DATA, ann_file=pool,
                     pipeline=resized_pipeline(base.train_pipeline, img_size)))
    warmup = max(1, round(epochs * base.param_scheduler[0].end / base.train_cfg.max_epochs))
    return dict(
        train_dataloader=loader,
        optim_wrapper=dict(optimizer=dict(
            lr=base.optim_wrapper.optimizer.lr * batch_size / base_batch)),
        param_scheduler=lr_schedule(epochs, warmup),
        train_cfg=dict(max_epochs=epochs),
        default_hooks=dict(checkpoint=dict(interval=1, max_keep_ckpts=1),
                           logger=dict(interval=10)))


def merge_dotted(overrides: dict, options: dict) -> None:
    """Merge ``{'a.b.c': value}`` (mmengine ``DictAction`` output) into ``overrides``."""
    for key, value in options.items():
        *parents, leaf = key.split('.')
        node = overrides
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise SystemExit(f'--hgkd-options {key}: {name} is not a dict in the config')
        node[leaf] = value


def write_config(path: str, base: str, overrides: dict) -> str:
    """A config file that ``_base_``s ``base`` (a repo config) with ``overrides``."""
    lines = [f'# Generated by tools/analysis_tools/compare_pretraining.py from {base}.',
             f'_base_ = [{osp.join(ROOT, base)!r}]']
    lines += [f'{key} = {pprint.pformat(value, sort_dicts=False)}'
              for key, value in overrides.items()]
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path


def write_configs(args: argparse.Namespace, pool: str) -> dict:
    """The three stage configs in ``<work>/configs/``; returns their paths."""
    bases = {name: Config.fromfile(osp.join(ROOT, path)) for name, path in BASE_CONFIGS.items()}
    if args.teacher:  # the teacher's arch: from the config that trained it
        bases['mae'] = Config.fromfile(osp.join(ROOT, args.teacher_config))
    size = args.img_size
    mae = stage_overrides(bases['mae'], pool, size, args.mae_epochs, args.mae_batch_size,
                          args.workers)
    mae['model'] = dict(backbone=dict(img_size=size), neck=dict(num_patches=(size // 16)**2))
    teacher = args.teacher or osp.join(args.work_dir, 'mae', f'epoch_{args.mae_epochs}.pth')
    hgkd = stage_overrides(bases['hgkd'], pool, size, args.student_epochs,
                           args.student_batch_size, args.workers)
    hgkd['model'] = dict(teacher=dict(checkpoint=teacher, img_size=size,
                                      arch=bases['mae'].model.backbone.arch))
    merge_dotted(hgkd, args.hgkd_options)
    spark = stage_overrides(bases['spark'], pool, size, args.spark_epochs,
                            args.student_batch_size, args.workers)
    spark['model'] = dict(input_size=size)
    if args.pretrain_seed is not None:  # another pre-training run of the same recipe
        for overrides in (mae, hgkd, spark):
            overrides['randomness'] = dict(seed=args.pretrain_seed)
    configs = osp.join(args.work_dir, 'configs')
    return {name: write_config(osp.join(configs, f'{name}.py'), BASE_CONFIGS[name], overrides)
            for name, overrides in dict(mae=mae, hgkd=hgkd, spark=spark).items()}


# ----------------------------------------------------------------------------- stages
SHARED_SETTINGS = ('img_size', 'mae_epochs', 'student_epochs', 'spark_epochs', 'mae_batch_size',
                   'student_batch_size', 'teacher', 'pretrain_seed', 'pool_images')


def reuse_stages(source: str, args: argparse.Namespace, settings: dict) -> None:
    """Link ``source``'s finished ``mae/`` and ``spark/`` stages into this work dir, after
    checking that ``source`` uses the same data and schedule (its ``settings.json``)."""
    try:
        with open(osp.join(source, 'settings.json')) as f:
            theirs = json.load(f)
    except OSError as error:
        raise SystemExit(f'--reuse-from: {source} is not a compare_pretraining work dir '
                         f'({error})')
    for key in SHARED_SETTINGS:
        if theirs.get(key) != settings[key]:
            raise SystemExit(f'--reuse-from: {source} has {key}={theirs.get(key)}, '
                             f'this run has {settings[key]}')
    epochs = dict(mae=args.mae_epochs, spark=args.spark_epochs)
    for name in ('mae', 'spark'):
        done = osp.join(source, name, f'epoch_{epochs[name]}.pth')
        link = osp.join(args.work_dir, name)
        if osp.isfile(done) and not osp.lexists(link):
            os.symlink(osp.join(source, name), link)


def check_stage_config(name: str, config: str, stage_dir: str, work_dir: str) -> None:
    """Refuse to reuse or resume a stage that was trained with another config: its copy
    ``stage_config.py`` (work dir paths aside) must equal this run's; a stage without
    one (made by an older version of this tool) is taken as it is. The copy is written
    before training."""
    record = osp.join(stage_dir, 'stage_config.py')
    with open(config) as f:
        ours = f.read()
    if not osp.isfile(record):
        if osp.isdir(stage_dir) and os.listdir(stage_dir):
            print(f'[compare] {name}: {stage_dir} has no stage_config.py; its settings are '
                  'not checked', flush=True)
        else:
            os.makedirs(stage_dir, exist_ok=True)
            with open(record, 'w') as f:
                f.write(f'# work_dir: {work_dir}\n{ours}')
        return
    with open(record) as f:
        source, theirs = f.readline()[len('# work_dir: '):].rstrip('\n'), f.read()
    # another work dir's stage for --reuse-from: its paths are its own
    if theirs.replace(source, '<work_dir>') != ours.replace(work_dir, '<work_dir>'):
        raise SystemExit(f'[compare] {name}: {stage_dir} was trained with other settings than '
                         f'this run (compare {record} with {config}): use another '
                         f'--work-dir, or delete {stage_dir} to train the stage again')


def train(name: str, config: str, work_dir: str, epochs: int) -> dict:
    """``tools/train.py config --resume`` unless ``epoch_<epochs>.pth`` exists; either way
    only with the config the stage was started with (:func:`check_stage_config`)."""
    stage_dir = osp.join(work_dir, name)
    check_stage_config(name, config, stage_dir, work_dir)
    checkpoint = osp.join(stage_dir, f'epoch_{epochs}.pth')
    timing = osp.join(stage_dir, 'stage_seconds.json')  # the run that made checkpoint
    if osp.isfile(checkpoint):
        print(f'[compare] {name}: {checkpoint} exists, skipped', flush=True)
        seconds = None
        if osp.isfile(timing):
            with open(timing) as f:
                seconds = json.load(f)['seconds']
        return dict(checkpoint=checkpoint, seconds=seconds, skipped=True)
    command = [sys.executable, 'tools/train.py', config, '--work-dir', stage_dir, '--resume']
    os.makedirs(stage_dir, exist_ok=True)
    log = osp.join(stage_dir, 'train_stdout.log')
    print(f'[compare] {name}: $ python {" ".join(command[1:])}  (output: {log})', flush=True)
    start = time.time()
    with open(log, 'a') as out:
        result = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode or not osp.isfile(checkpoint):
        with open(log) as f:
            tail = ''.join(f.readlines()[-30:])
        raise RuntimeError(f'stage {name} failed (exit {result.returncode}); end of {log}:\n'
                           f'{tail}')
    seconds = round(time.time() - start, 1)
    dump_json(timing, dict(seconds=seconds))
    print(f'[compare] {name}: done in {seconds:.0f} s', flush=True)
    return dict(checkpoint=checkpoint, seconds=seconds, skipped=False)


def run_probe(name: str, checkpoint: str, arch: str, args: argparse.Namespace, data: str,
              mode: str) -> dict:
    """``probe.evaluate`` with the run's settings; the result JSON is reused when it was
    made with the same checkpoint and settings."""
    seeds = list(args.ft_seeds if mode == 'finetune' else args.seeds)
    settings = dict(checkpoint=checkpoint, arch=arch, mode=mode, img_size=args.img_size,
                    data=[osp.abspath(d) for d in data], seeds=seeds,
                    epochs=args.ft_epochs if mode == 'finetune' else None,
                    checkpoint_mtime=None if checkpoint == 'random' else
                    os.stat(checkpoint).st_mtime_ns)
    out = osp.join(args.work_dir, 'probe', f'{name}_{mode}_{args.eval_split}.json')
    if osp.isfile(out):
        with open(out) as f:
            saved = json.load(f)
        if saved.get('settings') == settings:
            print(f'[compare] probe {name} ({mode}): {out} is up to date, reused', flush=True)
            return saved
    print(f'[compare] probe {name} ({mode}): $ python tools/analysis_tools/probe.py '
          f'{checkpoint} --data {data[0]} --test-dir {data[1]} --data-root {DATA} --{mode} '
          f'--arch {arch} --img-size {args.img_size} --seeds {" ".join(map(str, seeds))}'
          + (f' --epochs {args.ft_epochs}' if mode == 'finetune' else ''), flush=True)
    result = probe.evaluate(checkpoint, data[0], arch, args.img_size, mode, test_dir=data[1],
                            seeds=seeds, epochs=args.ft_epochs,
                            cache_dir=osp.join(args.work_dir, 'probe_cache'), data_root=DATA)
    result['settings'] = settings
    dump_json(out, result, indent=2)
    print(f"[compare] probe {name} ({mode}): top-1 {result['top1_mean']:.2f} "
          f"± {result['top1_std']:.2f} ({result['seconds']['total']:.0f} s)", flush=True)
    return result


# ---------------------------------------------------------------------------- results
def steps(epochs: int, images: int, batch_size: int) -> int:
    """Optimizer steps of an epoch-based run (mmengine keeps the last partial batch)."""
    return epochs * math.ceil(images / batch_size)


def model_rows(stages: dict, mae_config: str, args: argparse.Namespace,
               pool_images: int) -> list:
    """The four probed models: checkpoint, probe arch and pre-training steps."""
    student_steps = steps(args.student_epochs, pool_images, args.student_batch_size)
    spark_steps = steps(args.spark_epochs, pool_images, args.student_batch_size)
    if args.teacher:  # trained by its config on the same pool
        teacher_cfg = Config.fromfile(osp.join(ROOT, args.teacher_config))
        mae_steps = steps(teacher_cfg.train_cfg.max_epochs, len(splits.read_pool()),
                          teacher_cfg.train_dataloader.batch_size)
    else:
        mae_steps = steps(args.mae_epochs, pool_images, args.mae_batch_size)
    rows = [
        dict(method='H-GKD ResNet-18', name='hgkd', checkpoint=stages['hgkd']['checkpoint'],
             arch='resnet18', steps=student_steps,
             pretraining=f'MAE teacher ({mae_steps} steps) + distillation'),
        dict(method='SparK ResNet-18', name='spark', checkpoint=stages['spark']['checkpoint'],
             arch='resnet18', steps=spark_steps, pretraining='SparK (pixels)'),
        dict(method='random ResNet-18', name='random', checkpoint='random', arch='resnet18',
             steps=0, pretraining='none'),
        dict(method='MAE ViT teacher', name='teacher', checkpoint=stages['mae']['checkpoint'],
             arch=f'vit:{osp.join(ROOT, args.teacher_config) if args.teacher else mae_config}',
             steps=mae_steps, pretraining='MAE'),
    ]
    return [dict(row, img_size=args.img_size) for row in rows]


def step_seconds(configs: dict, args: argparse.Namespace) -> dict:
    """Median seconds per step of the H-GKD and SparK stage configs, measured side by side
    in this process (:mod:`hgkd_mm.evaluation.step_time`); cached in ``step_time.json``."""
    out = osp.join(args.work_dir, 'step_time.json')
    settings = dict(iters=args.time_steps, batch_size=args.student_batch_size,
                    img_size=args.img_size, threads=torch.get_num_threads(),
                    configs={name: open(configs[name]).read() for name in ('hgkd', 'spark')})
    if osp.isfile(out):
        with open(out) as f:
            saved = json.load(f)
        if saved['settings'] == settings:
            return saved['median_s']
    print(f'[compare] timing the H-GKD and SparK steps side by side ({args.time_steps} each)',
          flush=True)
    result = step_time.time_steps({name: configs[name] for name in ('hgkd', 'spark')},
                                  args.student_batch_size, args.img_size, args.time_steps)
    median = {name: part['median_s'] for name, part in result.items()}
    dump_json(out, dict(settings=settings, median_s=median,
                        times_s={name: part['times_s'] for name, part in result.items()},
                        machine=machine()), indent=1)
    return median


# two-sided 95% Student-t quantiles by degrees of freedom
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262}


def interval(result: dict) -> str:
    """``mean ± half-width of the 95% t-interval`` over the seeds (``mean`` for one)."""
    top1 = [run['top1'] for run in result['runs']]
    if len(top1) < 2:
        return f'{top1[0]:.2f}'
    half = T_975.get(len(top1) - 1, 1.96) * result['top1_std'] / math.sqrt(len(top1))
    return f"{result['top1_mean']:.2f} ± {half:.2f}"


def format_table(rows: Sequence[dict]) -> str:
    header = ('method', 'pre-training', 'steps', 'time (step s x steps)', 'img',
              'linear top-1 (mean ± 95% CI)', 'fine-tune top-1 (mean ± 95% CI)')
    lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
    for row in rows:
        time_cell = (f"{row['step_s'] * row['steps']:.0f} s ({row['step_s']:.2f} x "
                     f"{row['steps']})" if 'step_s' in row else '-')
        cells = [row['method'], row['pretraining'], str(row['steps']), time_cell,
                 str(row['img_size'])]
        for mode in ('linear', 'finetune'):
            result = row.get(mode)
            cells.append(interval(result) if result else '-')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def machine() -> str:
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        device = f'CPU only, {os.cpu_count()} cores ({platform.machine()})'
    return f'{device}; torch {torch.__version__}; {platform.platform()}'


# ------------------------------------------------------------------------------- main
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'compare'))
    parser.add_argument('--img-size', type=image_size, default=96,
                        help='pre-training and probe size, a multiple of 32')
    parser.add_argument('--mae-epochs', type=positive_int, default=20)
    parser.add_argument('--student-epochs', type=positive_int, default=3,
                        help='epochs of H-GKD and of SparK (same data and batch: same steps)')
    parser.add_argument('--mae-batch-size', type=positive_int, default=64)
    parser.add_argument('--student-batch-size', type=positive_int, default=32)
    parser.add_argument('--workers', type=non_negative_int, default=2, help='dataloader workers')
    parser.add_argument('--pool-size', type=positive_int,
                        help='use every ceil(6784/N)-th pool image only (at most N; quick runs)')
    parser.add_argument('--probe-classes', type=positive_int,
                        help='probe on N evenly spaced caltech101 classes only (quick runs)')
    parser.add_argument('--probe-per-class', type=positive_int,
                        help='probe on the first N images of each class only (quick runs)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--pretrain-seed', type=non_negative_int,
                        help='seed of the pre-training stages (default: the configs\' 0); '
                        'another seed in another --work-dir is another run of the recipe')
    parser.add_argument('--finetune', action='store_true', help='also fine-tune each model')
    parser.add_argument('--ft-epochs', type=positive_int, default=2)
    parser.add_argument('--ft-seeds', type=int, nargs='+', help='fine-tune seeds '
                        '(default: the first two of --seeds)')
    parser.add_argument('--spark-epochs', type=positive_int,
                        help='SparK epochs (default: --student-epochs; fewer for equal time)')
    parser.add_argument('--teacher', metavar='CKPT',
                        help='distil this MAE teacher instead of training one (e.g. the shipped '
                        'checkpoints/mae_vit-tiny-p16_pool-96px.pth)')
    parser.add_argument('--teacher-config', default=SHIPPED_TEACHER_CONFIG,
                        help='the config that trained --teacher (its ViT arch)')
    parser.add_argument('--eval-split', choices=('val', 'test'), default='val',
                        help='caltech101 part the probes report (val for choices; test once '
                        'per final model)')
    parser.add_argument('--time-steps', type=non_negative_int, default=0, metavar='N',
                        help='time N H-GKD and SparK steps side by side in this process and '
                        'report each student\'s pre-training time (equal-time comparisons)')
    parser.add_argument('--hgkd-options', nargs='+', action=DictAction, default={},
                        metavar='KEY=VALUE',
                        help='overrides of the H-GKD stage config, e.g. model.head.loss_on=all '
                        '(loss-target studies; use a new --work-dir, see --reuse-from)')
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS,
                        help='models to pre-train and probe (default: all four)')
    parser.add_argument('--reuse-from', metavar='WORK_DIR',
                        help='link the finished mae/ and spark/ stages of another work dir '
                        '(same data and schedule) instead of training them again')
    parser.add_argument('--smoke', action='store_true',
                        help='two iterations per stage on 8 images, 4-class probe (tests)')
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    if args.ft_seeds is None:
        args.ft_seeds = args.seeds[:2]
    if args.spark_epochs is None:
        args.spark_epochs = args.student_epochs
    if args.teacher:
        if not osp.isfile(args.teacher):
            parser.error(f'--teacher: no file {args.teacher}')
        args.teacher = osp.abspath(args.teacher)
        if not osp.isfile(osp.join(ROOT, args.teacher_config)):
            parser.error(f'--teacher-config: no file {args.teacher_config}')
    args.work_dir = osp.abspath(args.work_dir)
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault('OMP_NUM_THREADS', str(os.cpu_count() or 1))
    os.makedirs(args.work_dir, exist_ok=True)
    pool, pool_images = write_pool(args.work_dir, args.pool_size)
    settings = dict({key: getattr(args, key) for key in SHARED_SETTINGS[:-1]},
                    pool_images=pool_images)
    dump_json(osp.join(args.work_dir, 'settings.json'), settings)
    if args.reuse_from:
        reuse_stages(osp.abspath(args.reuse_from), args, settings)
    configs = write_configs(args, pool)
    data = probe_files(args.work_dir, args.eval_split, args.probe_classes, args.probe_per_class)

    if args.teacher:
        stages = dict(mae=dict(checkpoint=args.teacher, seconds=None, skipped=True))
    else:
        stages = dict(mae=train('mae', configs['mae'], args.work_dir, args.mae_epochs))
    for name, epochs in (('hgkd', args.student_epochs), ('spark', args.spark_epochs)):
        if name in args.methods:
            stages[name] = train(name, configs[name], args.work_dir, epochs)
        else:
            stages[name] = dict(checkpoint=None, seconds=None, skipped=True)

    rows = [row for row in model_rows(stages, configs['mae'], args, pool_images)
            if row['name'] in args.methods]
    if args.time_steps:
        seconds = step_seconds(configs, args)
        for row in rows:
            if row['name'] in seconds:
                row['step_s'] = seconds[row['name']]
    for row in rows:
        for mode in ('linear', 'finetune') if args.finetune else ('linear', ):
            row[mode] = run_probe(row['name'], row['checkpoint'], row['arch'], args, data, mode)

    table = format_table(rows)
    command = 'python tools/analysis_tools/compare_pretraining.py ' + ' '.join(
        sys.argv[1:] if argv is None else argv)
    summary = dict(
        command=command, machine=machine(), seeds=args.seeds, img_size=args.img_size,
        pool_images=pool_images, probe_data=data, eval_split=args.eval_split,
        teacher=args.teacher, mae_epochs=args.mae_epochs,
        student_epochs=args.student_epochs, spark_epochs=args.spark_epochs, mae_batch_size=args.mae_batch_size,
        student_batch_size=args.student_batch_size,
        stage_seconds={name: stage['seconds'] for name, stage in stages.items()},
        rows=rows, table=table)
    dump_json(osp.join(args.work_dir, 'results.json'), summary, indent=2)
    with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
        f.write(f'{table}\n\n`{command}`\n\n{summary["machine"]}; seeds {args.seeds}; '
                f'probed on the {args.eval_split} part of the caltech101 split\n')
    print(table)
    return summary


if __name__ == '__main__':
    main()
