"""What a user's training run gets on real images: mmengine's Runner loop (loading, hooks,
logging, step) timed on a folder of JPEGs, and the data pipeline's images per second in
one process (one dataloader worker's rate), next to mmpretrain's pipeline with the same
augmentation. ``tools/analysis_tools/benchmark_pretrain.py CONFIG --data DIR`` reports
them beside the bare step."""
from __future__ import annotations

import copy
import math
import os
import os.path as osp
import tempfile
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from mmengine.config import Config, ConfigDict
from mmengine.dataset import Compose, default_collate
from mmengine.hooks import Hook
from mmengine.registry import DefaultScope

from ..datasets.image_folder import IMAGE_EXTENSIONS

# this package's loaders that stand for LoadImageFromFile + RandomResizedCrop (+ RandomFlip)
LOADERS = ('LoadRandomResizedCrop', 'LoadJpegCropParams')
NOT_CROP_ARGS = ('type', 'draft', 'backend', 'backend_args', 'flip_prob')


def image_files(data_dir: str, option: str = '--data') -> List[str]:
    """The images under ``data_dir`` (recursive, sorted), relative to it; a missing or
    empty folder stops with a message naming the command-line ``option`` that gave it."""
    if not osp.isdir(data_dir):
        raise SystemExit(f'{option} {data_dir}: not a folder')
    files = sorted(osp.relpath(osp.join(root, name), data_dir)
                   for root, _, names in os.walk(data_dir) for name in names
                   if name.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise SystemExit(f'{option} {data_dir}: no {"/".join(IMAGE_EXTENSIONS)} images in it')
    return files


def image_encoding(paths: List[str]) -> dict:
    """What the loaders' speed depends on, read from the files' headers: how many are
    JPEGs, their chroma subsampling (``'444'``, ``'422'``, ``'420'``; ``'other'`` for
    greyscale and the rest), and their mean pixels and compressed bits per pixel. The
    entropy decode that dominates a loader grows with the bits; a ratio between two
    pipelines moves with both (docs/data_pipeline.md)."""
    from PIL import Image, JpegImagePlugin
    subsampling = {'444': 0, '422': 0, '420': 0, 'other': 0}
    pixels, bits = [], []
    for path in paths:
        with Image.open(path) as image:
            if image.format != 'JPEG':
                continue
            code = JpegImagePlugin.get_sampling(image) if image.mode == 'RGB' else -1
            subsampling[{0: '444', 1: '422', 2: '420'}.get(code, 'other')] += 1
            pixels.append(image.width * image.height)
            bits.append(8 * osp.getsize(path) / pixels[-1])
    return dict(images=len(paths), jpeg=len(pixels), subsampling=subsampling,
                mean_pixels=float(np.mean(pixels)) if pixels else 0.0,
                bits_per_pixel=float(np.mean(bits)) if bits else 0.0)


def pipeline_variants(pipeline: List[dict]) -> Dict[str, List[dict]]:
    """``{'config': pipeline}`` and, where it loads with this package's random-resized-crop
    loaders, ``'mmpretrain'``: the same pipeline with ``LoadImageFromFile`` + mmpretrain's
    ``RandomResizedCrop`` (the same crop arguments, pillow's resize) + ``RandomFlip`` (where
    the loader draws the flip) in its place."""
    pipeline = [dict(t) for t in pipeline]
    variants = {'config': pipeline}
    for i, transform in enumerate(pipeline):
        if transform['type'] in LOADERS:
            crop = {k: v for k, v in transform.items() if k not in NOT_CROP_ARGS}
            reference = [dict(type='LoadImageFromFile'),
                         dict(crop, type='RandomResizedCrop', backend='pillow')]
            if 'flip_prob' in transform or transform['type'] == 'LoadJpegCropParams':
                reference.append(dict(type='RandomFlip', prob=transform.get('flip_prob', 0.5)))
            variants['mmpretrain'] = pipeline[:i] + reference + pipeline[i + 1:]
    return variants


def loader_rates(pipelines: Dict[str, List[dict]], data_dir: str, files: List[str],
                 rounds: int = 5, seed: int = 0, block: int = 10) -> Dict[str, dict]:
    """Images per second of each pipeline in this process (a dataloader worker's work:
    read, decode, augment, pack, collate), on ``files``, with one torch thread and OpenCV's
    threads off as in a dataloader worker of mmengine. The pipelines take turns every
    ``block`` images, so that they see the same machine speed (on a shared VM it drifts by
    10% and more within seconds) while each keeps its caches warm over a block, as a worker
    does; each draws from its own numpy RNG stream, seeded per round, so pipelines that
    draw alike (this package's loaders and mmpretrain's) crop the same boxes.
    ``img_per_s`` by wall time, ``img_per_s_cpu`` by this process's CPU time (what other
    jobs on the machine change least), both from the median round; ``cpu_s_rounds``: the
    CPU seconds of each round."""
    import cv2
    paths = [osp.join(data_dir, f) for f in files]
    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(0)
    try:
        walls, cpus = _timed_rounds(pipelines, paths, rounds, seed, block)
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv2_threads)
    return {name: dict(img_per_s=len(paths) / float(np.median(walls[name])),
                       img_per_s_cpu=len(paths) / float(np.median(cpus[name])),
                       cpu_s_rounds=cpus[name], images=len(paths), rounds=rounds,
                       block=block) for name in pipelines}


def _timed_rounds(pipelines: Dict[str, List[dict]], paths: List[str], rounds: int,
                  seed: int, block: int):
    """Seconds (wall, CPU) of each pipeline over ``paths``, per round."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        composed = {name: Compose(pipeline) for name, pipeline in pipelines.items()}
    walls: Dict[str, list] = {name: [] for name in pipelines}
    cpus: Dict[str, list] = {name: [] for name in pipelines}
    saved = np.random.get_state()
    try:
        for round_ in range(rounds + 1):  # round 0 warms the page cache and the imports
            np.random.seed(seed + round_)
            streams = {name: np.random.get_state() for name in pipelines}
            wall = {name: 0.0 for name in pipelines}
            cpu = {name: 0.0 for name in pipelines}
            for start in range(0, len(paths), block):
                for name, compose in composed.items():
                    np.random.set_state(streams[name])
                    wall0, cpu0 = time.perf_counter(), time.process_time()
                    with DefaultScope.overwrite_default_scope('mmpretrain'):
                        packed = [compose(dict(img_path=path))
                                  for path in paths[start:start + block]]
                    default_collate(packed)  # the batch collates (a worker does it too)
                    wall[name] += time.perf_counter() - wall0
                    cpu[name] += time.process_time() - cpu0
                    streams[name] = np.random.get_state()
            if round_:
                for name in pipelines:
                    walls[name].append(wall[name])
                    cpus[name].append(cpu[name])
    finally:
        np.random.set_state(saved)
    return walls, cpus


class IterClock(Hook):
    """Wall time (and this process's CPU time) from the end of the ``warmup``-th training
    iteration (with no warm-up: from the start of the epoch, before the first batch is
    loaded) to the end of the last, the device synchronised at both ends only (so the
    loop overlaps as in a run), and ``IterTimerHook``'s ``time`` / ``data_time`` of the
    iterations in between."""

    priority = 'LOWEST'

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.start = self.start_cpu = self.end = self.end_cpu = None
        self.seconds: List[float] = []
        self.data_seconds: List[float] = []

    def before_train_epoch(self, runner) -> None:
        if self.warmup == 0:  # no warm-up: from before the first batch is loaded
            self.start, self.start_cpu = time.perf_counter(), time.process_time()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        done = runner.iter + 1  # iterations finished, this one included
        if done > self.warmup:
            self.seconds.append(runner.message_hub.get_scalar('train/time').current())
            self.data_seconds.append(
                runner.message_hub.get_scalar('train/data_time').current())
        if done == self.warmup or done == runner.max_iters:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if done == self.warmup:
                self.start, self.start_cpu = time.perf_counter(), time.process_time()
            else:
                self.end, self.end_cpu = time.perf_counter(), time.process_time()


def runner_cfg(cfg: Config, model: ConfigDict, data_dir: str, files: List[str],
               batch_size: int, iters: int, num_workers: int, amp: bool,
               work_dir: str) -> Config:
    """``cfg`` as a Runner config for ``iters`` iterations on the images of ``data_dir``
    (listed in ``work_dir/images.txt``, repeated as often as needed) with ``model``, no
    checkpoints and the log every ``min(its interval, iters)`` iterations."""
    cfg = copy.deepcopy(cfg)
    listed = files * math.ceil(batch_size * iters / len(files))
    ann_file = osp.join(work_dir, 'images.txt')
    with open(ann_file, 'w') as f:
        f.write('\n'.join(listed[:batch_size * iters]) + '\n')
    loader = cfg.train_dataloader
    loader.dataset = dict(type='CustomDataset', data_root=data_dir, ann_file=ann_file,
                          with_label=False, pipeline=loader.dataset.pipeline)
    loader.update(batch_size=batch_size, num_workers=num_workers, drop_last=True,
                  persistent_workers=num_workers > 0)
    if num_workers == 0:
        loader.pop('prefetch_factor', None)
    cfg.model = model
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1)
    for key in ('val_dataloader', 'val_cfg', 'val_evaluator', 'load_from'):
        cfg.pop(key, None)
    wrapper = cfg.optim_wrapper
    if not amp and wrapper.get('type') == 'AmpOptimWrapper':
        wrapper.type = 'OptimWrapper'
        for key in ('dtype', 'loss_scale'):
            wrapper.pop(key, None)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1, save_last=False)
    logger = cfg.default_hooks.get('logger') or dict(type='LoggerHook')
    cfg.default_hooks.logger = dict(logger, interval=min(logger.get('interval', 10), iters))
    cfg.work_dir = work_dir
    cfg.launcher = 'none'
    cfg.resume = False
    return cfg


def time_runner_loop(cfg: Config, model: ConfigDict, data_dir: str, files: List[str],
                     batch_size: int, iters: int, warmup: int, num_workers: int,
                     amp: bool) -> dict:
    """img/s of ``Runner.train()``'s iterations after ``warmup`` (loading with
    ``num_workers`` workers, hooks, logging, step) on ``files`` of ``data_dir``."""
    from mmengine.runner import Runner
    with tempfile.TemporaryDirectory(prefix='runner_loop_') as work_dir:
        runner = Runner.from_cfg(runner_cfg(cfg, model, data_dir, files, batch_size,
                                            warmup + iters, num_workers, amp, work_dir))
        clock = IterClock(warmup)
        runner.register_hook(clock)
        runner.train()
    seconds = clock.end - clock.start
    # the main process's CPU time per iteration: the step, hooks, logging and collecting the
    # batch, not the workers' decoding (on the CPU comparable to the bare step's cpu_ms)
    cpu_ms = (clock.end_cpu - clock.start_cpu) / iters * 1000
    return dict(img_per_s=batch_size * iters / seconds, ms_per_iter=seconds / iters * 1000,
                cpu_ms_per_iter=cpu_ms,
                data_wait=sum(clock.data_seconds) / sum(clock.seconds), iters=iters,
                warmup=warmup, batch_size=batch_size, num_workers=num_workers,
                images=len(files), logger_interval=min(
                    cfg.default_hooks.get('logger', {}).get('interval', 10), warmup + iters))


def data_timings(args, result: dict, retime: Optional[Callable[[], dict]] = None,
                 loader_images: int = 100) -> dict:
    """``benchmark_pretrain.py --data``: beside ``result``'s bare step (``result['hgkd']``),
    the loader-only rate per worker of the config's pipeline and of mmpretrain's (on the
    first ``loader_images`` images) and the Runner's loop at the same batch size, model
    and precision; ``retime`` times the bare step again after the loop (its summary), and
    the loop is compared with the mean of the two. Adds them to ``result['data']`` and
    prints them."""
    from . import hgkd_config, hgkd_model_cfg
    cfg = hgkd_config(args.config, args.cfg_options)
    model = hgkd_model_cfg(cfg, args)
    model.compile = args.compile
    if not args.compile:  # as the bare step: eager, no CUDA graphs
        model.cuda_graphs = False
    files = image_files(args.data)
    workers = cfg.train_dataloader.num_workers if args.workers is None else args.workers
    loader = loader_rates(pipeline_variants(cfg.train_dataloader.dataset.pipeline), args.data,
                          files[:loader_images])
    encoding = image_encoding([osp.join(args.data, f) for f in files[:loader_images]])
    runner = time_runner_loop(cfg, model, args.data, files, args.batch_size, args.iters,
                              args.warmup, workers, amp=result['amp'] == 'bf16')
    # the bare step before the Runner (result['hgkd']) and, with ``retime``, after it: their
    # mean, so that a machine whose speed drifts (a shared VM) moves both sides alike
    steps = [result['hgkd']] + ([retime()] if retime else [])
    steps_each = [s['img_per_s'] for s in steps]
    step = float(np.mean(steps_each))
    data = dict(dir=args.data, encoding=encoding, loader=loader, runner=runner,
                step_img_per_s=step, step_img_per_s_each=steps_each,
                runner_vs_step=runner['img_per_s'] / step)
    if 'cpu_ms_median' in result['hgkd']:  # CPU: other jobs on the machine change it least
        data['runner_cpu_vs_step_cpu'] = (runner['cpu_ms_per_iter']
                                          / np.mean([s['cpu_ms_median'] for s in steps]))
    if 'mmpretrain' in loader:
        # per round (the pipelines took turns in it), mmpretrain's CPU seconds over the
        # config's; the median of these paired ratios
        data['loader_vs_mmpretrain_rounds'] = [
            ref / own for ref, own in zip(loader['mmpretrain']['cpu_s_rounds'],
                                          loader['config']['cpu_s_rounds'])]
        data['loader_vs_mmpretrain'] = float(np.median(data['loader_vs_mmpretrain_rounds']))
    result['data'] = data
    if encoding['jpeg']:
        chroma = ', '.join(f'{n} {k}' for k, n in encoding['subsampling'].items() if n)
        print(f"loader images: {encoding['jpeg']} of {encoding['images']} JPEG ({chroma}), "
              f"{encoding['mean_pixels'] / 1e6:.2f} Mpx and {encoding['bits_per_pixel']:.2f} "
              'bits per pixel on average')
    print(f"{'per worker (one process)':28s} {'img/s':>8s} {'img/s by CPU time':>18s}")
    for name, rate in loader.items():
        print(f"{name + ' pipeline':28s} {rate['img_per_s']:8.1f} {rate['img_per_s_cpu']:18.1f}")
    if 'mmpretrain' in loader:
        per_round = data['loader_vs_mmpretrain_rounds']
        print(f"config / mmpretrain per worker by CPU time: {data['loader_vs_mmpretrain']:.2f}x "
              f"(median of {len(per_round)} rounds, {min(per_round):.2f}-{max(per_round):.2f}x)")
    print(f"Runner loop on {args.data} ({workers} workers): {runner['img_per_s']:.2f} img/s, "
          f"{runner['data_wait']:.1%} of it waiting for data; bare step {step:.2f} img/s"
          + (' (the mean of {:.2f} before and {:.2f} after)'.format(*steps_each)
             if len(steps_each) == 2 else '') + ': '
          f"Runner / step {data['runner_vs_step']:.3f}"
          + (f", by CPU time step / Runner {1 / data['runner_cpu_vs_step_cpu']:.3f}"
             if 'runner_cpu_vs_step_cpu' in data else ''))
    return data
